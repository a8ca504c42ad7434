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

from tui_lab.cli.parser import SWEEP_CONTROLS, build_parser, settings_from_args
from tui_lab.cli.progress import ProgressPrinter
from tui_lab.engine import event_loop
from tui_lab.engine.errors import LabError
from tui_lab.engine.events import Event
from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.load.stats import RunSummary, summarize_load
from tui_lab.engine.machine import preflight
from tui_lab.engine.machine.discovery import find_model, find_nginx, find_server
from tui_lab.engine.machine.facts import machine_facts
from tui_lab.engine.machine.preflight import DoesNotFit, require_fit
from tui_lab.engine.plan.config import LabConfig, exposure_warning
from tui_lab.engine.plan.runs import Plan
from tui_lab.engine.processes import standing_cluster
from tui_lab.engine.processes.leftovers import find_leftovers, stop_leftovers
from tui_lab.engine.processes.run_folder import new_run_dir
from tui_lab.engine.results.files import ResultsWriter, format_table, read_rows, top_cells
from tui_lab.engine.settings.run_settings import (
    RunSettings,
    build_plan,
    cluster_args,
    cluster_layout,
    lab_config,
    load_settings,
)
from tui_lab.engine.settings.values import (
    check_api_key,
    one_value,
    require_at_least,
    single_balance,
)
from tui_lab.engine.sweeps import detached, resume
from tui_lab.engine.sweeps.adaptive import AdaptiveRunner, runner_class
from tui_lab.engine.sweeps.event_log import EventLog
from tui_lab.engine.sweeps.resume import recorded_config
from tui_lab.engine.sweeps.runner import check_plan_ports

T = TypeVar("T")

SUMMARY_COLUMNS = (
    "cell",
    "instances",
    "parallel",
    "concurrency",
    "n_predict",
    "requests_ok",
    "requests_failed",
    "output_tok_per_s",
    "requests_per_s",
    "e2el_ms_p50",
    "e2el_ms_p99",
    "error",
)


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


def warn_if_exposed(lab: LabConfig) -> None:
    warning = exposure_warning(lab.host, lab.api_key)
    if warning:
        print(f"llamalab: warning: {warning}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    if args.command == "sweep" and (args.run in SWEEP_CONTROLS or args.file or args.retry_failed):
        return cmd_sweep_control(args)
    settings = settings_from_args(args)
    plan = build_plan(settings)
    lab = lab_config(settings, need_nginx=any(c.layout.proxied for c in plan.cells))
    warn_if_exposed(lab)
    check_plan_ports(plan, lab)
    writer = ResultsWriter(
        lab.results_dir,
        plan.run,
        recorded_config(settings, plan, lab, sys.argv[1:]),
        machine_facts(lab.server_bin, lab.model),
    )
    if settings.detach:
        writer.close()
        return _launch_detached(writer.meta_path, settings.api_key, retry_failed=False)
    return _run_plan(settings, plan, lab, writer)


def _run_plan(
    settings: RunSettings,
    plan: Plan,
    lab: LabConfig,
    writer: ResultsWriter,
    *,
    skip: frozenset[int] = frozenset(),
    detached_run_dir: Path | None = None,
) -> int:
    """Run in the foreground, or as the detached process, which also logs its events."""
    progress = ProgressPrinter(sys.stderr)
    events = EventLog(detached_run_dir / detached.EVENTS_FILE) if detached_run_dir else None

    def emit(event: Event) -> None:
        progress.handle(event)
        if events is not None:
            events(event)

    run_dir = detached_run_dir or new_run_dir(plan.run)
    runner = runner_class(plan)(plan, lab, load_settings(settings), emit, run_dir, writer, skip)
    try:
        outcome = run_until_signal(runner.run())
    finally:
        writer.close()
        progress.close()
        if events is not None:
            events.close()
    adaptive = isinstance(runner, AdaptiveRunner)
    columns = (*SUMMARY_COLUMNS, "phase") if adaptive else SUMMARY_COLUMNS
    print(format_table(list(outcome.rows), columns))
    if adaptive:
        print(runner.verdict())
    print(f"results: {writer.csv_path} and {writer.jsonl_path}")
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
    resumption = resume.load(Path(args.file), retry_failed=args.retry_failed, api_key=api_key)
    plan, settings, total = resumption.plan, resumption.settings, len(resumption.plan.cells)
    if not resumption.todo:
        print(f"nothing to resume: all {total} cells of {args.file} have a row")
        return 0
    lab = lab_config(settings, need_nginx=any(c.layout.proxied for c in plan.cells))
    check_plan_ports(plan, lab)
    if args.detach:
        return _launch_detached(resumption.meta_path, api_key, retry_failed=args.retry_failed)
    writer = ResultsWriter.append_to(resumption.meta_path)
    print(
        f"resuming {plan.run}: {len(resumption.done)} of {total} cells have a row, "
        f"running the other {len(resumption.todo)}",
        file=sys.stderr,
    )
    run_dir = Path(args.detached_run_dir) if args.detached_run_dir else None
    return _run_plan(settings, plan, lab, writer, skip=resumption.done, detached_run_dir=run_dir)


def _launch_detached(meta_path: Path, api_key: str, *, retry_failed: bool) -> int:
    state = detached.launch(meta_path, api_key=api_key, retry_failed=retry_failed)
    print(f"{state['run']} runs detached (pid {state['pid']}); results: {state['csv']}")
    print("watch it: llamalab sweep attach (or llamalab-tui); stop it: llamalab sweep stop")
    return 0


def cmd_attach() -> int:
    state = detached.latest()
    if state is None:
        print("no detached sweep to attach to")
        return 1
    progress = ProgressPrinter(sys.stderr)
    try:
        finished = detached.follow(state, progress.handle)
    except KeyboardInterrupt:
        progress.close()
        print("left it running: sweep attach watches again, sweep stop stops it", file=sys.stderr)
        return 0
    progress.close()
    print(format_table(read_rows(Path(state["jsonl"])), SUMMARY_COLUMNS))
    print(f"results: {state['csv']} and {state['jsonl']}")
    return 0 if finished else 1


def cmd_stop() -> int:
    state = detached.running()
    if state is None:
        print("no detached sweep running")
        return 0
    detached.stop(state)
    print(f"stopped {state['run']} (pid {state['pid']}); its finished cells are in {state['csv']}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    if args.action in ("start", "serve"):
        settings = settings_from_args(args)
        layout = cluster_layout(settings)
        balance = single_balance(settings.balance)
        lab = lab_config(settings, need_nginx=True)
        warn_if_exposed(lab)
        if args.action == "serve":
            return asyncio.run(standing_cluster.serve(lab, layout, balance))  # type: ignore[arg-type]
        if not args.no_preflight:
            try:
                require_fit(lab.model, layout)
            except DoesNotFit as exc:
                print(
                    f"llamalab: cluster not started, {exc} (--no-preflight starts it anyway)",
                    file=sys.stderr,
                )
                return 1
        state = standing_cluster.start_detached(
            lab, layout.instances, cluster_args(settings), lab.ready_timeout_s + 60
        )
        print(
            f"cluster ready: {state['endpoint']}  "
            f"(OpenAI-compatible base URL: {state['endpoint']}/v1)"
        )
        print("stop it with: llamalab cluster stop")
        return 0
    if args.action == "status":
        state = asyncio.run(standing_cluster.live_status())
        if args.json and state is not None:
            asyncio.run(standing_cluster.add_latest_figures(state))
        if args.json:
            shown = standing_cluster.public_view(state) if state else None
            print(json.dumps(shown or {"endpoint": None, "nginx": None, "instances": []}, indent=2))
        elif state is None:
            print("no cluster running")
        else:
            print(f"endpoint: {state['endpoint']}")
            rows = [{"process": "nginx", **state["nginx"]}] + [
                {"process": f"server {i['index']}", **i} for i in state["instances"]
            ]
            print(format_table(rows, ("process", "port", "pid", "state")))
        return 0 if state else 1
    stopped = standing_cluster.stop_running()
    print("cluster stopped" if stopped else "no cluster running")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    concurrency = one_value(settings.concurrency, "concurrency")
    load = load_settings(settings)
    api_key = check_api_key(settings.api_key) or None
    if not args.url.startswith(("http://", "https://")):
        raise LabError(f"--url: {args.url!r} is not an http:// or https:// URL")
    spec = LoadSpec(
        url=args.url.rstrip("/"),
        concurrency=concurrency,
        requests=load.requests_for(concurrency),
        n_predict=load.n_predict,
        api=load.api,
        stream=load.stream,
        ignore_eos=load.ignore_eos,
        cache_prompt=load.cache_prompt,
        timeout_s=load.timeout_s,
        api_key=api_key,
    )

    async def measure() -> RunSummary:
        # Summarised inside the loop: Python 3.11's asyncio.run reprs the returned value on
        # exit (its SIGINT handler check): over a second for 40,000 records.
        return summarize_load(await run_load(spec))

    summary = event_loop.run(measure())
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
    rows = top_cells(read_rows(path), args.field, args.order, args.count)
    columns = [c for c in SUMMARY_COLUMNS if c != args.field]
    print(format_table(rows, [args.field, *columns]))
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
