"""`llamalab-tui`: the full-screen lab over SSH.

The app is the adapter between the engine and the widgets: engine events are buffered and
posted to the dashboard once per frame; widgets render them; keys and the command palette call
the actions below, which are the only way the UI drives the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui_lab.assets_dir import ASSETS
from tui_lab.bridge import EventBridge, notification
from tui_lab.commands import PresetCommands, ResultsCommands
from tui_lab.engine import lab
from tui_lab.engine.errors import LabError
from tui_lab.engine.events import Event, RunFinished
from tui_lab.engine.processes.cluster import Cluster
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.processes.leftovers import find_leftovers, stop_leftovers
from tui_lab.engine.processes.standing_cluster import ClusterState
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.presets import load_last_or_default, save_last
from tui_lab.engine.settings.run_settings import RunSettings, build_plan, estimate
from tui_lab.engine.sweeps.detached import DetachedRun
from tui_lab.engine.sweeps.runner import PlanRunner
from tui_lab.engine.telemetry.collector import TelemetryCollector
from tui_lab.messages import PresetChosen, ResultsFileChosen, ResumeSweep, StartWinner
from tui_lab.screens.choice_modal import leftovers_modal, quit_modal
from tui_lab.screens.cluster_modal import ClusterModal
from tui_lab.screens.configure import ConfigureScreen
from tui_lab.screens.dashboard import DashboardScreen
from tui_lab.screens.help import HelpScreen
from tui_lab.widgets.instance_table import InstanceTable

FRAME_S = 0.1
CLUSTER_POLL_S = 2.0
HANGUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class LabApp(App[None]):
    TITLE = "llamalab"
    CSS_PATH = ASSETS / "app.tcss"
    COMMANDS = App.COMMANDS | {PresetCommands, ResultsCommands}
    BINDINGS = [
        Binding("c", "configure", "Configure"),
        Binding("s", "start_run", "Start"),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "toggle_cluster", "Cluster"),
        Binding("k", "screen.restart_instance", "Restart"),  # the dashboard's selected row
        Binding("l", "screen.show_log", "Log"),
        Binding("v", "results", "Results"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_lab", "Quit"),
        Binding("ctrl+c", "quit_lab", "Quit", show=False, priority=True),
    ]

    # What the status line shows; each change redraws it (`_update_status`).
    cluster: reactive[ClusterState | None] = reactive(None, init=False)  # whoever started it
    runner: reactive[PlanRunner | None] = reactive(None, init=False)  # the run going here
    attached: reactive[DetachedRun | None] = reactive(None, init=False)  # the one followed

    def __init__(
        self, settings: RunSettings | None = None, *, telemetry_interval_s: float = 1.0
    ) -> None:
        super().__init__()
        problem = None
        if settings is None:
            settings, problem = load_last_or_default()
        self.settings = settings
        self.startup_problem = problem
        self.dashboard = DashboardScreen()
        self.collector = TelemetryCollector(self.emit, interval_s=telemetry_interval_s)
        self.bridge = EventBridge(
            self.dashboard,
            self.collector,
            api_key=lambda owner: (
                (self.settings.api_key or None)
                if owner == "run"
                else (self.cluster.api_key if self.cluster else None)
            ),
        )
        self.writer: ResultsWriter | None = None
        self.cluster_busy = False
        self._run_worker: Worker[None] | None = None

    # ---- engine events -------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """The engine's sink: to the dashboard through the bridge; the app tells a person what
        must be seen at once, and reacts to the end of a run."""
        self.bridge.emit(event)
        if (note := notification(event)) is not None:
            text, severity, timeout = note
            self.notify(text, severity=severity, timeout=timeout)
        if isinstance(event, RunFinished):
            self._run_finished(event)

    def _flush_events(self) -> None:
        self.bridge.flush()

    # ---- lifecycle -------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[Any]:
        return self.dashboard

    def on_mount(self) -> None:
        self._catch_hangup()
        self.set_interval(FRAME_S, self._flush_events)
        self._collect_telemetry()
        self._poll_cluster()
        self._offer_to_stop_leftovers()
        self._rejoin_detached()
        if self.startup_problem:
            self.notify(self.startup_problem, severity="error", timeout=15)
        self._update_status()

    def _catch_hangup(self) -> None:
        """End like `q` on SIGTERM or SIGHUP (a dropped SSH session): the run's servers stop and
        its finished cells stay written. A second signal while stopping is left to the default
        action; the kernel's parent-death signal still takes the servers down with us."""
        loop = asyncio.get_running_loop()
        for sig in HANGUP_SIGNALS:
            loop.add_signal_handler(sig, self._hung_up, sig)

    def _hung_up(self, sig: signal.Signals) -> None:
        loop = asyncio.get_running_loop()
        for other in HANGUP_SIGNALS:
            loop.remove_signal_handler(other)
        self.log.warning(f"{sig.name}: stopping the run's servers and exiting")
        self._stop_and_exit(stop_cluster=False, hangup=sig == signal.SIGHUP)

    def on_unmount(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANGUP_SIGNALS:
            loop.remove_signal_handler(sig)

    @work(group="telemetry")
    async def _collect_telemetry(self) -> None:
        await self.collector.run()

    @work(group="leftovers")
    async def _offer_to_stop_leftovers(self) -> None:
        found = await asyncio.to_thread(find_leftovers)
        if not found:
            return
        choice = await self.push_screen_wait(leftovers_modal([f.describe() for f in found]))
        if choice != "stop":
            return
        stuck = await asyncio.to_thread(stop_leftovers, found)
        if stuck:
            text = ", ".join(f.describe() for f in stuck)
            self.notify(f"could not stop: {text}", severity="error", timeout=15)
        else:
            self.notify(f"stopped {len(found)} leftover process(es)")

    def _update_status(self) -> None:
        run = f"next run: {self.settings.kind}"
        with contextlib.suppress(LabError):
            run += f" ({estimate(build_plan(self.settings))})"
        if self.runner is not None:
            run = f"running: {self.runner.plan.run}"
        if self.attached is not None:
            run = f"detached: {self.attached.run} (pid {self.attached.pid}; x stops it)"
        cluster = "cluster: off (r starts one)"
        if self.cluster is not None:
            shown = self.cluster
            cluster = f"cluster: {shown.endpoint}/v1 ({shown.ready}/{len(shown.instances)} ready)"
            if shown.history:
                cluster += f", {shown.history[-1].describe(detail=False)}"
        self.dashboard.status = f"{cluster}  |  {run}"

    def watch_cluster(self) -> None:
        self._update_status()

    def watch_runner(self) -> None:
        self._update_status()

    def watch_attached(self) -> None:
        self._update_status()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.show:
                yield SystemCommand(
                    binding.description,
                    f"{binding.description} ({binding.key})",
                    lambda action=binding.action: self.run_action(action),
                )

    # ---- runs ---------------------------------------------------------------------------------

    @property
    def run_active(self) -> bool:
        return self._run_worker is not None and self._run_worker.state in (
            WorkerState.PENDING,
            WorkerState.RUNNING,
        )

    def action_configure(self) -> None:
        self.push_screen(ConfigureScreen(self.settings), callback=self._configured)

    def _configured(self, settings: RunSettings | None) -> None:
        if settings is None:
            return
        self.settings = settings
        save_last(settings)
        self._update_status()

    def action_start_run(self) -> None:
        if not self._busy():
            self._run_worker = self._run(self.settings)

    def on_resume_sweep(self, message: ResumeSweep) -> None:
        """The results screen's R: the sweep's cells with no row yet, run the way `s` runs."""
        if not self._busy():
            self._run_worker = self._run(self.settings, message.results_file)

    def _busy(self) -> bool:
        if self.run_active:
            self.notify("a run is already going: x cancels it", severity="warning")
        elif self.attached is not None:
            self.notify("a detached run is going: x stops it", severity="warning")
        return self.run_active or self.attached is not None

    @work(group="run", exclusive=True)
    async def _run(self, settings: RunSettings, resume_file: Path | None = None) -> None:
        """A new run of `settings`, or the rest of the sweep of `resume_file` with the settings
        it recorded; here, or detached when the form says so."""
        try:
            if resume_file is None:
                prepared = await lab.prepare(settings)
            else:
                prepared = await lab.prepare_resume(resume_file, api_key=settings.api_key)
        except lab.NothingToResume as nothing:
            name = resume_file.name if resume_file else ""
            self.notify(f"nothing to resume: all {nothing.cells} cells of {name} have a row")
            return
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        if resume_file is None:
            save_last(settings)
        else:
            left = f"{prepared.todo} of {prepared.cells} cells left"
            self.notify(f"resuming {resume_file.name}: {left}")
        self._warn_if_exposed(prepared.warning)
        self.writer = prepared.writer
        if settings.detach:
            await self._run_detached(prepared)
            return
        self.runner = lab.runner_for(prepared, self.emit)
        try:
            await lab.run(self.runner)
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=10)
        finally:
            self.runner = None

    async def _run_detached(self, prepared: lab.PreparedRun) -> None:
        try:
            state = await lab.detach(prepared)
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=15)
            return
        self.notify(f"{state.run} runs detached: q leaves it running, x stops it", timeout=15)
        self._attach_detached(state)

    @work(group="attach")
    async def _rejoin_detached(self) -> None:
        """A detached run that still runs is followed as soon as the app starts."""
        running = await lab.running_detached()
        if running is not None:
            self.notify(f"attached to the detached {running.run} (pid {running.pid})")
            self._attach_detached(running)

    def _attach_detached(self, state: DetachedRun) -> None:
        """Follow a detached run's events as if it ran here; it goes on when the app ends."""
        self.attached = state
        self._follow(state)

    @work(group="follow", exclusive=True)
    async def _follow(self, state: DetachedRun) -> None:
        try:
            await lab.follow(state, self.emit)
        finally:
            if self.attached == state:
                self.attached = None

    def _warn_if_exposed(self, warning: str | None) -> None:
        if warning:
            self.notify(warning, severity="warning", timeout=20)

    def _run_finished(self, event: RunFinished) -> None:
        what = "cancelled" if event.cancelled else "finished"
        self.notify(
            f"{event.run} {what}: {event.cells_ok} cells ok, {event.cells_failed} failed; "
            f"results: {event.results_csv}",
            severity="warning" if event.cells_failed or event.cancelled else "information",
            timeout=15,
        )
        refresh = getattr(self.screen, "refresh_results", None)
        if refresh is not None:
            refresh()

    def action_cancel_run(self) -> None:
        if self.attached is not None:
            self.notify("stopping the detached run: its servers stop, finished cells are kept")
            self._stop_detached(self.attached)
            return
        if not self.run_active:
            self.notify("no run to cancel", severity="warning")
            return
        self.notify("cancelling: stopping servers; finished cells are kept")
        self.workers.cancel_group(self, "run")

    @work(group="detach-stop")
    async def _stop_detached(self, state: DetachedRun) -> None:
        await lab.stop_detached(state)

    def on_instance_table_restart_requested(self, message: InstanceTable.RestartRequested) -> None:
        cluster = self.runner.cluster if self.runner else None
        if message.process.owner != "run" or cluster is None:
            self.notify("only a running test's servers restart in place", severity="warning")
            return
        self._restart(cluster, message.process.index)

    @work(group="restart")
    async def _restart(self, cluster: Cluster, index: int) -> None:
        try:
            async with control_session() as session:
                await cluster.restart_instance(index, session)
            self.notify(f"llama-server #{index} restarted")
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=10)

    def on_preset_chosen(self, message: PresetChosen) -> None:
        self._configured(message.settings)
        self.notify(f"preset {message.name}: the next run's settings")

    def on_results_file_chosen(self, message: ResultsFileChosen) -> None:
        from tui_lab.screens.results import ResultsScreen  # plotting loads on first use

        self.push_screen(ResultsScreen(message.path.parent, message.path))

    def action_results(self) -> None:
        from tui_lab.screens.results import ResultsScreen  # plotting loads on first use

        selected = self.writer.jsonl_path if self.writer else None
        self.push_screen(ResultsScreen(Path(self.settings.results or "results"), selected))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # ---- the standing cluster ----------------------------------------------------------------

    @work(group="cluster-watch", exclusive=True)
    async def _poll_cluster(self) -> None:
        """Show a standing cluster, whoever started it, and notice when it goes away."""
        announced = False
        while True:
            try:
                state = await lab.cluster_status()
            except LabError as exc:
                self.notify(str(exc), severity="error")
                state = None
            if state is None and self.cluster is not None:
                for event in self.cluster.process_states(stopped=True):
                    self.emit(event)
            self.cluster = state
            if state is not None:
                for event in state.process_states():
                    self.emit(event)
                if not announced:
                    self.notify(f"round-robin cluster serving at {state.endpoint}/v1")
                announced = True
            else:
                announced = False
            await asyncio.sleep(CLUSTER_POLL_S)

    def action_toggle_cluster(self) -> None:
        if self.cluster_busy:
            self.notify("the cluster is starting or stopping", severity="warning")
        elif self.cluster is not None:
            self.cluster_busy = True
            self._stop_cluster()
        else:
            self.push_screen(ClusterModal(self.settings), callback=self._cluster_chosen)

    def _cluster_chosen(self, settings: RunSettings | None) -> None:
        if settings is None:
            return
        self.settings = self.settings.with_values(
            instances=settings.instances,
            parallel=settings.parallel,
            base_port=settings.base_port,
            nginx_port=settings.nginx_port,
            host=settings.host,
        )
        save_last(self.settings)
        self.cluster_busy = True
        self.notify("starting the cluster…")
        self._start_cluster(lab.prepare_cluster(settings))

    def on_start_winner(self, message: StartWinner) -> None:
        if self.cluster_busy:
            self.notify("the cluster is starting or stopping", severity="warning")
        elif self.cluster is not None:
            self.notify(
                f"a cluster already serves at {self.cluster.endpoint}/v1: stop it first (r)",
                severity="warning",
            )
        else:
            self.cluster_busy = True
            self.notify(f"starting the recommended cluster of {message.results_file.name}…")
            self._start_cluster(lab.prepare_winner(message.results_file, self.settings))

    @work(group="cluster")
    async def _start_cluster(self, preparing: Awaitable[lab.PreparedCluster]) -> None:
        """Start a prepared cluster: the dialog's, or a results file's winner."""
        try:
            prepared = await preparing
            self._warn_if_exposed(prepared.warning)
            state = await lab.start_cluster(prepared)
            self.notify(f"cluster ready: point Open WebUI at {state.endpoint}/v1", timeout=30)
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=15)
        finally:
            self.cluster_busy = False

    @work(group="cluster")
    async def _stop_cluster(self) -> None:
        try:
            await lab.stop_cluster()
            self.notify("cluster stopped")
        finally:
            self.cluster_busy = False

    # ---- quitting ------------------------------------------------------------------------------

    def action_quit_lab(self) -> None:
        if self.cluster is not None:
            self.push_screen(quit_modal(self.cluster.endpoint), callback=self._quit_choice)
        else:
            self._stop_and_exit(stop_cluster=False)

    def _quit_choice(self, choice: str | None) -> None:
        if choice in ("leave", "stop"):
            self._stop_and_exit(stop_cluster=choice == "stop")

    @work(group="quit", exclusive=True)
    async def _stop_and_exit(self, *, stop_cluster: bool, hangup: bool = False) -> None:
        """Stop what this app started (the run's servers), and the cluster if asked, then exit.

        After a hangup the terminal is gone and Textual's writer thread dies on its first
        write to it: from then on every frame fills the writer's bounded queue until a write
        blocks the event loop, before the run is stopped. So nothing is drawn any more, and
        restoring the terminal is skipped too: the process ends the way SIGHUP ends it, once
        the servers are stopped and the results closed."""
        with self.batch_update() if hangup else contextlib.nullcontext():
            worker = self._run_worker
            if worker is not None and self.run_active:
                worker.cancel()
                with contextlib.suppress(Exception):
                    await worker.wait()
            if stop_cluster:
                await lab.stop_cluster()
            if hangup:
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGHUP)
        self.exit()


def main() -> int:
    try:
        LabApp().run()
    except LabError as exc:
        print(f"llamalab-tui: {exc}", file=sys.stderr)
        return 2
    return 0
