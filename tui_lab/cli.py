"""`llamalab`: the headless lab, on the same engine as the TUI.

Every user mistake ends here as one line on stderr and exit status 2, with nothing started.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tui_lab import __version__
from tui_lab.cli_progress import ProgressPrinter
from tui_lab.engine import standing_cluster
from tui_lab.engine.config import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    DEFAULT_NGINX_PORT,
    LabConfig,
    require_at_least,
)
from tui_lab.engine.discovery import find_model, find_nginx, find_server
from tui_lab.engine.errors import LabError
from tui_lab.engine.load import LoadSpec, run_load
from tui_lab.engine.machine import machine_facts
from tui_lab.engine.results import ResultsWriter, format_table, read_rows, top_cells
from tui_lab.engine.run_folder import new_run_dir
from tui_lab.engine.run_settings import (
    RunSettings,
    build_plan,
    check_api_key,
    cluster_args,
    cluster_layout,
    lab_config,
    load_settings,
    one_value,
    single_balance,
)
from tui_lab.engine.runs import Plan
from tui_lab.engine.stats import summarize_load
from tui_lab.engine.sweep import PlanRunner, check_plan_ports

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

    return asyncio.run(main())


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; a user needs just the error and where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_server_options(p: argparse.ArgumentParser, *, threads_help: str = "") -> None:
    g = p.add_argument_group("servers")
    g.add_argument(
        "--server-bin",
        default="",
        help="llama-server to use (default: LLAMA_SERVER_BIN, PATH, ./llama.cpp/build/bin, "
        "the bundled CPU build)",
    )
    g.add_argument("--model", default="", help="GGUF model file (default: bundled Gemma 3 270M)")
    g.add_argument("--nginx-bin", default="", help="nginx to use (default: PATH, /usr/sbin/nginx)")
    g.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    g.add_argument("--base-port", default=str(DEFAULT_BASE_PORT), help="port of instance 0")
    g.add_argument("--nginx-port", default=str(DEFAULT_NGINX_PORT))
    g.add_argument("--threads", default="default", help="llama-server --threads" + threads_help)
    g.add_argument(
        "--threads-http",
        default="default",
        help="llama-server --threads-http (default: enough for each instance's clients)"
        + threads_help,
    )
    g.add_argument("--ctx-per-slot", default="", help="context tokens per slot")
    g.add_argument(
        "--server-args", default="", help='extra llama-server arguments, e.g. "-ngl 99 -fa on"'
    )
    g.add_argument("--api-key", default="", help="require this key at the servers and nginx")
    g.add_argument(
        "--upstream-keepalive",
        action="store_true",
        help="keep nginx-to-server connections open (non-streaming loads only: llama-server "
        "closes them after streamed replies)",
    )
    g.add_argument("--ready-timeout", default="300", help="seconds for a server to load")


def _add_load_options(p: argparse.ArgumentParser, *, n_predict_help: str = "") -> None:
    g = p.add_argument_group("load")
    g.add_argument("--n-predict", default="64", help="tokens per request" + n_predict_help)
    g.add_argument(
        "--requests",
        default="",
        help="measured requests per cell (default: requests-per-client x concurrency)",
    )
    g.add_argument("--requests-per-client", default="2")
    g.add_argument("--api", default="completion", help="completion or chat (/v1/chat/completions)")
    g.add_argument("--stream", action="store_true", help="stream tokens (gives TTFT, ITL, TPOT)")
    g.add_argument("--allow-eos", action="store_true", help="let requests stop at end of sequence")
    g.add_argument("--cache-prompt", action="store_true", help="let requests hit the prompt cache")
    g.add_argument("--request-timeout", default="600")


def _add_results_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results folder (default %(default)s)")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failed cell")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llamalab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llamalab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    test = sub.add_parser("test", help="one measurement: single, concurrent or round-robin")
    test.add_argument("run", choices=("single", "concurrent", "round-robin"))
    test.add_argument("--instances", default="2", help="servers behind nginx (round-robin)")
    test.add_argument("--parallel", default="4", help="slots per server")
    test.add_argument("--concurrency", default="8", help="clients in flight")
    test.add_argument("--balance", default="round_robin", help="round_robin or least_conn")
    _add_server_options(test)
    _add_load_options(test)
    _add_results_options(test)

    sweep = sub.add_parser("sweep", help="a grid of measurements: threads, round-robin or full")
    sweep.add_argument("run", choices=("threads", "round-robin", "full"))
    sweep.add_argument("--instances", default="1,2", help="list (full); one value (round-robin)")
    sweep.add_argument("--parallel", default="1,4", help="list (full); one value otherwise")
    sweep.add_argument("--concurrency", default="1,8", help="list; one value for threads")
    sweep.add_argument("--batch-size", default="default", help="list (full): 512,2048,default")
    sweep.add_argument("--ubatch-size", default="default", help="list (full)")
    sweep.add_argument(
        "--balance", default="round_robin", help="list (full): round_robin,least_conn"
    )
    _add_server_options(sweep, threads_help="; a list in the threads sweep")
    _add_load_options(sweep, n_predict_help="; a list in the round-robin sweep")
    _add_results_options(sweep)

    cluster = sub.add_parser("cluster", help="a standing cluster for outside clients")
    csub = cluster.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    for name in ("start", "serve"):
        c = csub.add_parser(
            name,
            help="start N servers + nginx and leave them serving"
            if name == "start"
            else argparse.SUPPRESS,
        )
        c.add_argument("--instances", default="2")
        c.add_argument("--parallel", default="4")
        c.add_argument("--balance", default="round_robin")
        _add_server_options(c)
    status = csub.add_parser("status", help="endpoint, nginx and each instance")
    status.add_argument("--json", action="store_true")
    csub.add_parser("stop", help="stop the standing cluster")

    load = sub.add_parser("load", help="drive load against any llama-server-compatible endpoint")
    load.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    load.add_argument("--concurrency", default="8")
    load.add_argument("--api-key", default="")
    load.add_argument("--json", action="store_true")
    _add_load_options(load)

    analyze = sub.add_parser("analyze", help="top cells of a results file")
    analyze.add_argument("file")
    analyze.add_argument("--field", default="output_tok_per_s")
    analyze.add_argument("--order", choices=("asc", "desc"), default="desc")
    analyze.add_argument("--count", type=int, default=10)

    sub.add_parser("doctor", help="show which llama-server, nginx and model would be used")
    return parser


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The flags this command has, as the user typed them, onto the shared settings."""
    kind = f"{args.command}-{args.run}" if args.command in ("test", "sweep") else "test-round-robin"
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(RunSettings)
        if f.name != "kind" and hasattr(args, f.name)
    }
    return RunSettings(kind=kind, **given)


def _plan_config(settings: RunSettings, plan: Plan, lab: LabConfig) -> dict[str, Any]:
    recorded = settings.to_mapping()
    recorded.pop("api_key")
    return {
        "run": plan.run,
        "argv": sys.argv[1:],
        "cells": len(plan.cells),
        "requests": plan.requests,
        "server_bin": str(lab.server_bin),
        "model": str(lab.model),
        "nginx_bin": str(lab.nginx_bin) if lab.nginx_bin else None,
        "settings": recorded,
    }


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    plan = build_plan(settings)
    lab = lab_config(settings, need_nginx=any(c.layout.proxied for c in plan.cells))
    check_plan_ports(plan, lab)
    writer = ResultsWriter(
        lab.results_dir,
        plan.run,
        _plan_config(settings, plan, lab),
        machine_facts(lab.server_bin, lab.model),
    )
    progress = ProgressPrinter(sys.stderr)
    runner = PlanRunner(
        plan, lab, load_settings(settings), progress.handle, new_run_dir(plan.run), writer
    )
    try:
        outcome = run_until_signal(runner.run())
    finally:
        writer.close()
        progress.close()
    print(format_table(list(outcome.rows), SUMMARY_COLUMNS))
    print(f"results: {writer.csv_path} and {writer.jsonl_path}")
    return 0 if outcome.cells_failed == 0 else 1


def cmd_cluster(args: argparse.Namespace) -> int:
    if args.action in ("start", "serve"):
        settings = settings_from_args(args)
        layout = cluster_layout(settings)
        balance = single_balance(settings.balance)
        lab = lab_config(settings, need_nginx=True)
        if args.action == "serve":
            return asyncio.run(standing_cluster.serve(lab, layout, balance))  # type: ignore[arg-type]
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
        if args.json:
            print(json.dumps(state or {"endpoint": None, "nginx": None, "instances": []}, indent=2))
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
    summary = summarize_load(asyncio.run(run_load(spec)))
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


if __name__ == "__main__":
    sys.exit(main())
