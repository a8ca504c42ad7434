"""`llamalab`: the headless lab, on the same engine as the TUI.

Every user mistake ends here as one line on stderr and exit status 2, with nothing started.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tui_lab.cli.comparison import compare_text
from tui_lab.cli.parser import SWEEP_CONTROLS, build_parser, settings_from_args
from tui_lab.cli.progress import ProgressPrinter
from tui_lab.cli.tables import format_table, marked, summary_columns
from tui_lab.engine import event_loop, lab
from tui_lab.engine.errors import LabError
from tui_lab.engine.events import Event
from tui_lab.engine.machine import preflight
from tui_lab.engine.machine.discovery import find_model, find_nginx, find_server
from tui_lab.engine.machine.preflight import DoesNotFit
from tui_lab.engine.processes.leftovers import find_leftovers, stop_leftovers
from tui_lab.engine.processes.standing_cluster import status_json
from tui_lab.engine.results.compare import compare
from tui_lab.engine.results.ranking import top_cells
from tui_lab.engine.results.reader import Row, read_rows
from tui_lab.engine.results.recommendation import recommendation
from tui_lab.engine.results.report import write_report
from tui_lab.engine.results.sweep_file import load_sweep
from tui_lab.engine.settings.run_settings import cluster_layout
from tui_lab.engine.settings.values import one_value, require_at_least
from tui_lab.engine.sweeps import detached
from tui_lab.engine.sweeps.adaptive import AdaptiveRunner
from tui_lab.engine.sweeps.event_log import EventLog

T = TypeVar("T")


class Stopped(Exception):
    """SIGTERM or SIGHUP (a dropped SSH session) arrived; the run was cancelled cleanly."""


def run_until_signal(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro`, turning SIGTERM and SIGHUP into a cancellation so that its `finally` blocks
    stop every server it started, rather than leaving that to the kernel's PDEATHSIG."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            raise Stopped from None

    return event_loop.run(main())


def warn_if_exposed(warning: str | None) -> None:
    if warning:
        print(f"llamalab: warning: {warning}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    if args.command == "sweep" and (args.run in SWEEP_CONTROLS or args.file or args.retry_failed):
        return cmd_sweep_control(args)
    settings = settings_from_args(args)
    prepared = event_loop.run(lab.prepare(settings, sys.argv[1:]))
    warn_if_exposed(prepared.warning)
    return _launch_detached(prepared) if settings.detach else _run_plan(prepared)


def _run_plan(prepared: lab.PreparedRun, detached_run_dir: Path | None = None) -> int:
    """Run in the foreground, or as the detached process, which also logs its events."""
    progress = ProgressPrinter(sys.stderr)
    events = EventLog(detached_run_dir / detached.EVENTS_FILE) if detached_run_dir else None

    def emit(event: Event) -> None:
        progress.handle(event)
        if events is not None:
            events(event)

    runner = lab.runner_for(prepared, emit, detached_run_dir)
    try:
        outcome = run_until_signal(lab.run(runner))
    finally:
        progress.close()
        if events is not None:
            events.close()
    adaptive = runner if isinstance(runner, AdaptiveRunner) else None
    rows = marked(outcome.rows)
    columns = summary_columns(rows)
    print(format_table(rows, (*columns, "phase") if adaptive else columns))
    if adaptive is not None:
        print(adaptive.verdict())
    _print_recommendation(rows)
    print(f"results: {prepared.writer.csv_path} and {prepared.writer.jsonl_path}")
    return 0 if outcome.cells_failed == 0 else 1


# What `sweep resume`, `attach` and `stop` take; every other sweep flag is the recorded sweep's.
CONTROL_FLAGS = {
    "resume": {"file", "retry_failed", "detach", "api_key", "detached_run_dir"},
    "attach": set(),
    "stop": set(),
}


def cmd_sweep_control(args: argparse.Namespace) -> int:
    """`sweep resume`, `attach`, `stop`, and the resume-only arguments given to another sweep."""
    if args.file and args.run != "resume":
        raise LabError(f"sweep {args.run}: unexpected argument {args.file!r}")
    if args.run not in SWEEP_CONTROLS:
        raise LabError(f"sweep {args.run}: --retry-failed is for sweep resume")
    defaults = vars(build_parser().parse_args(["sweep", args.run]))
    for name, value in vars(args).items():
        if name not in CONTROL_FLAGS[args.run] and value != defaults[name]:
            why = "it resumes with the settings it recorded" if args.run == "resume" else "none do"
            raise LabError(f"sweep {args.run}: --{name.replace('_', '-')} does not apply ({why})")
    if args.run == "attach":
        return cmd_attach()
    if args.run == "stop":
        return cmd_stop()
    return cmd_resume(args)


def cmd_resume(args: argparse.Namespace) -> int:
    if not args.file:
        raise LabError("sweep resume: give the interrupted sweep's .jsonl or .csv results file")
    api_key = args.api_key or os.environ.get(detached.API_KEY_ENV, "")
    resumption = lab.prepare_resume(
        Path(args.file), retry_failed=args.retry_failed, api_key=api_key
    )
    try:
        prepared = event_loop.run(resumption)
    except lab.NothingToResume as nothing:
        print(f"nothing to resume: all {nothing.cells} cells of {args.file} have a row")
        return 0
    warn_if_exposed(prepared.warning)
    if args.detach:
        return _launch_detached(prepared)
    print(
        f"resuming {prepared.plan.run}: {len(prepared.done)} of {prepared.cells} cells have a "
        f"row, running the other {prepared.todo}",
        file=sys.stderr,
    )
    run_dir = Path(args.detached_run_dir) if args.detached_run_dir else None
    return _run_plan(prepared, run_dir)


def _launch_detached(prepared: lab.PreparedRun) -> int:
    state = event_loop.run(lab.detach(prepared))
    print(f"{state.run} runs detached (pid {state.pid}); results: {state.csv}")
    print("watch it: llamalab sweep attach (or llamalab-tui); stop it: llamalab sweep stop")
    return 0


def cmd_attach() -> int:
    state = event_loop.run(lab.latest_detached())
    if state is None:
        print("no detached sweep to attach to")
        return 1
    progress = ProgressPrinter(sys.stderr)
    try:
        finished = event_loop.run(lab.follow(state, progress.handle))
    except KeyboardInterrupt:
        progress.close()
        print("left it running: sweep attach watches again, sweep stop stops it", file=sys.stderr)
        return 0
    progress.close()
    rows = marked(read_rows(state.jsonl))
    print(format_table(rows, summary_columns(rows)))
    _print_recommendation(rows)
    print(f"results: {state.csv} and {state.jsonl}")
    return 0 if finished else 1


def cmd_stop() -> int:
    state = event_loop.run(lab.stop_detached())
    if state is None:
        print("no detached sweep running")
        return 0
    print(f"stopped {state.run} (pid {state.pid}); its finished cells are in {state.csv}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    if args.action in ("start", "serve"):
        prepared = asyncio.run(lab.prepare_cluster(settings_from_args(args)))
        warn_if_exposed(prepared.warning)
        if args.action == "serve":
            return asyncio.run(lab.serve_cluster(prepared))
        try:
            started = asyncio.run(lab.start_cluster(prepared, preflight=not args.no_preflight))
        except DoesNotFit as exc:
            print(
                f"llamalab: cluster not started, {exc} (--no-preflight starts it anyway)",
                file=sys.stderr,
            )
            return 1
        endpoint = started.endpoint
        print(f"cluster ready: {endpoint}  (OpenAI-compatible base URL: {endpoint}/v1)")
        print("stop it with: llamalab cluster stop")
        return 0
    if args.action == "status":
        state = asyncio.run(lab.cluster_status(figures=args.json))
        if args.json:
            print(status_json(state))
        elif state is None:
            print("no cluster running")
        else:
            print(f"endpoint: {state.endpoint}")
            processes = [("nginx", state.nginx)] + [
                (f"server {i.index}", i) for i in state.instances
            ]
            rows = [
                {"process": name, "port": p.port, "pid": p.pid, "state": p.state}
                for name, p in processes
            ]
            print(format_table(rows, ("process", "port", "pid", "state")))
            if state.history:
                print("healed:")
                print("\n".join(f"  {incident.describe()}" for incident in state.history))
        return 0 if state else 1
    stopped = asyncio.run(lab.stop_cluster())
    print("cluster stopped" if stopped else "no cluster running")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    summary = event_loop.run(lab.measure_load(args.url, settings_from_args(args)))
    if args.json:
        print(json.dumps(summary.to_json_dict(), indent=2))
    else:
        flat = summary.to_flat_dict()
        print(format_table([flat], list(flat)))
    return 0 if summary.requests_failed == 0 else 1


def cmd_analyze(args: argparse.Namespace) -> int:
    require_at_least(args.count, 1, "count")
    path = Path(args.file)
    if not path.is_file():
        raise LabError(f"results file not found: {path}")
    every = marked(read_rows(path))
    rows = top_cells(every, args.field, args.order, args.count)
    columns = [c for c in summary_columns(every) if c != args.field]
    print(format_table(rows, [args.field, *columns]))
    _print_recommendation(every)
    return 0


def _print_recommendation(rows: Sequence[Row]) -> None:
    text = recommendation(rows)
    if text is not None:
        print(f"recommended: {text}")


def cmd_report(args: argparse.Namespace) -> int:
    files = write_report(load_sweep(Path(args.file)), Path(args.out) if args.out else None)
    print(f"report: {files.html} (self-contained) and {files.markdown} (plots in {files.plots})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    print(compare_text(compare(load_sweep(Path(args.a)), load_sweep(Path(args.b)))))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    found: dict[str, str] = {}
    status = 0
    for name, finder in (
        ("llama-server", find_server),
        ("nginx", find_nginx),
        ("model", find_model),
    ):
        try:
            found[name] = str(finder(None))
        except LabError as exc:
            found[name] = f"MISSING: {exc}"
            status = 1
    for name, value in found.items():
        print(f"{name:13} {value}")
    return status


def cmd_cleanup(args: argparse.Namespace) -> int:
    found = find_leftovers()
    for left in found:
        print(f"{'left running' if args.dry_run else 'stopping'}: {left.describe()}")
    stuck = [] if args.dry_run else stop_leftovers(found)
    for left in stuck:
        print(f"llamalab: could not stop {left.describe()}", file=sys.stderr)
    if not found:
        print("nothing left running by an earlier lab")
    return 1 if stuck else 0


def cmd_preflight(args: argparse.Namespace) -> int:
    """Exit 0 fits, 1 does not; bad input (a missing or unreadable model) is 2, as everywhere."""
    settings = settings_from_args(args)
    layout = cluster_layout(settings, one_value(settings.n_predict, "n-predict"))
    if args.ctx_size:
        layout = dataclasses.replace(layout, ctx_size=one_value(args.ctx_size, "ctx-size"))
    verdict = preflight.check(find_model(settings.model or None), layout)
    print("\n".join(verdict.report()))
    return 0 if verdict.fits else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("test", "sweep"):
            return cmd_run(args)
        if args.command == "cluster":
            return cmd_cluster(args)
        if args.command == "load":
            return cmd_load(args)
        if args.command == "analyze":
            return cmd_analyze(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "preflight":
            return cmd_preflight(args)
        if args.command == "cleanup":
            return cmd_cleanup(args)
        return cmd_doctor(args)
    except LabError as exc:
        print(f"llamalab: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Stopped):
        print(
            "llamalab: interrupted; its servers are stopped and finished cells kept",
            file=sys.stderr,
        )
        return 130
