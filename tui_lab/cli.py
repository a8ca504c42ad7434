"""`llamalab`: the headless lab, on the same engine as the TUI.

Every user mistake ends here as one line on stderr and exit status 2, with nothing started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tui_lab import __version__
from tui_lab.cli_progress import ProgressPrinter
from tui_lab.engine import runs, standing_cluster
from tui_lab.engine.config import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    DEFAULT_NGINX_PORT,
    LabConfig,
    Layout,
    LoadSettings,
    check_extra_args,
    check_host,
    check_port,
    computed_ctx_size,
    parse_balances,
    parse_int_list,
    parse_positive_ints,
    require_at_least,
)
from tui_lab.engine.discovery import find_model, find_nginx, find_server
from tui_lab.engine.errors import LabError
from tui_lab.engine.load import LoadSpec, run_load
from tui_lab.engine.machine import machine_facts
from tui_lab.engine.results import ResultsWriter, format_table, read_rows, top_cells
from tui_lab.engine.run_folder import new_run_dir
from tui_lab.engine.runs import Plan, ServerOptions
from tui_lab.engine.stats import summarize_load
from tui_lab.engine.sweep import PlanRunner, check_plan_ports

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


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; a user needs just the error and where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_server_options(p: argparse.ArgumentParser, *, sweepable_threads: bool = False) -> None:
    g = p.add_argument_group("servers")
    g.add_argument(
        "--server-bin",
        help="llama-server to use (default: LLAMA_SERVER_BIN, PATH, "
        "./llama.cpp/build/bin, the bundled CPU build)",
    )
    g.add_argument("--model", help="GGUF model file (default: the bundled Gemma 3 270M)")
    g.add_argument("--nginx-bin", help="nginx to use (default: PATH, /usr/sbin/nginx)")
    g.add_argument(
        "--host", default=DEFAULT_HOST, help="address servers and nginx bind (default %(default)s)"
    )
    g.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help="port of instance 0; instance i uses base+i",
    )
    g.add_argument("--nginx-port", type=int, default=DEFAULT_NGINX_PORT)
    if not sweepable_threads:
        g.add_argument("--threads", type=int, help="llama-server --threads (default: its own)")
        g.add_argument(
            "--threads-http", type=int, help="llama-server --threads-http (default: slots + 1)"
        )
    g.add_argument(
        "--ctx-per-slot",
        type=int,
        help="context tokens per slot (default: prompt budget + n_predict)",
    )
    g.add_argument(
        "--server-args",
        default="",
        help='extra llama-server arguments, shell-quoted, e.g. "-ngl 99 -fa on"',
    )
    g.add_argument("--api-key", help="pass --api-key to the servers and require it at nginx")
    g.add_argument(
        "--upstream-keepalive",
        action="store_true",
        help="keep nginx-to-server connections open (non-streaming loads only: llama-server "
        "closes them after streamed replies)",
    )
    g.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds for a server to load (default %(default)s)",
    )


def _add_load_options(p: argparse.ArgumentParser, *, n_predict_list: bool = False) -> None:
    g = p.add_argument_group("load")
    if n_predict_list:
        g.add_argument(
            "--n-predict",
            default="64",
            help="tokens to generate per request, a list (default %(default)s)",
        )
    else:
        g.add_argument(
            "--n-predict",
            type=int,
            default=64,
            help="tokens to generate per request (default %(default)s)",
        )
    g.add_argument(
        "--requests",
        type=int,
        help="measured requests per cell (default: requests-per-client x concurrency)",
    )
    g.add_argument("--requests-per-client", type=int, default=2)
    g.add_argument(
        "--api",
        choices=("completion", "chat"),
        default="completion",
        help="/completion or /v1/chat/completions (default %(default)s)",
    )
    g.add_argument("--stream", action="store_true", help="stream tokens (gives TTFT, ITL, TPOT)")
    g.add_argument(
        "--allow-eos", action="store_true", help="let requests stop early at end of sequence"
    )
    g.add_argument("--cache-prompt", action="store_true", help="let requests hit the prompt cache")
    g.add_argument("--request-timeout", type=float, default=600.0)


def _add_results_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results folder (default %(default)s)")
    p.add_argument(
        "--stop-on-error", action="store_true", help="stop the sweep at the first failed cell"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llamalab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llamalab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    test = sub.add_parser("test", help="one measurement: single, concurrent or round-robin")
    test.add_argument("run", choices=runs.RUN_NAMES)
    test.add_argument("--instances", type=int, default=2, help="servers behind nginx (round-robin)")
    test.add_argument("--parallel", type=int, default=4, help="slots per server")
    test.add_argument("--concurrency", type=int, default=8, help="clients in flight")
    test.add_argument("--balance", default="round_robin", help="round_robin or least_conn")
    _add_server_options(test)
    _add_load_options(test)
    _add_results_options(test)

    sweep = sub.add_parser("sweep", help="a grid of measurements: threads, round-robin or full")
    sweep.add_argument("run", choices=runs.SWEEP_NAMES)
    sweep.add_argument("--instances", default="1,2", help="list (full); one value for round-robin")
    sweep.add_argument("--parallel", default="1,4", help="list (full); one value otherwise")
    sweep.add_argument(
        "--concurrency", default="1,8", help="list (full, round-robin); one value for threads"
    )
    sweep.add_argument(
        "--threads", default="default", help="list for the threads sweep, e.g. 1,2,default"
    )
    sweep.add_argument("--threads-http", default="default", help="list for the threads sweep")
    sweep.add_argument("--batch-size", default="default", help="list (full), e.g. 512,2048,default")
    sweep.add_argument("--ubatch-size", default="default", help="list (full)")
    sweep.add_argument(
        "--balance", default="round_robin", help="list (full): round_robin,least_conn"
    )
    _add_server_options(sweep, sweepable_threads=True)
    _add_load_options(sweep, n_predict_list=True)
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
        c.add_argument("--instances", type=int, default=2)
        c.add_argument("--parallel", type=int, default=4)
        c.add_argument("--balance", default="round_robin")
        _add_server_options(c)
    status = csub.add_parser("status", help="endpoint, nginx and each instance")
    status.add_argument("--json", action="store_true")
    csub.add_parser("stop", help="stop the standing cluster")

    load = sub.add_parser("load", help="drive load against any llama-server-compatible endpoint")
    load.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    load.add_argument("--concurrency", type=int, default=8)
    load.add_argument("--api-key")
    load.add_argument("--json", action="store_true")
    _add_load_options(load)

    analyze = sub.add_parser("analyze", help="top cells of a results file")
    analyze.add_argument("file")
    analyze.add_argument("--field", default="output_tok_per_s")
    analyze.add_argument("--order", choices=("asc", "desc"), default="desc")
    analyze.add_argument("--count", type=int, default=10)

    sub.add_parser("doctor", help="show which llama-server, nginx and model would be used")
    return parser


def lab_config(args: argparse.Namespace, *, need_nginx: bool) -> LabConfig:
    """Validate everything before discovery touches the disk, then find the parts."""
    host = check_host(args.host)
    check_port(args.base_port, "base-port")
    check_port(args.nginx_port, "nginx-port")
    require_at_least(args.ready_timeout, 1, "ready-timeout")
    if args.api_key is not None and not args.api_key.replace("-", "").replace("_", "").isalnum():
        raise LabError("--api-key: use letters, digits, '-' and '_' only")
    return LabConfig(
        server_bin=find_server(args.server_bin),
        model=find_model(args.model),
        nginx_bin=find_nginx(args.nginx_bin) if need_nginx else None,
        host=host,
        base_port=args.base_port,
        nginx_port=args.nginx_port,
        results_dir=Path(getattr(args, "results", "results")),
        api_key=args.api_key,
        ready_timeout_s=args.ready_timeout,
        continue_on_error=not getattr(args, "stop_on_error", False),
        upstream_keepalive=args.upstream_keepalive,
    )


def server_options(args: argparse.Namespace) -> ServerOptions:
    try:
        extra = tuple(shlex.split(args.server_args))
    except ValueError as exc:
        raise LabError(f"--server-args: {exc}") from None
    ctx = args.ctx_per_slot
    if ctx is not None:
        require_at_least(ctx, 16, "ctx-per-slot")
    threads = getattr(args, "threads", None)
    threads_http = getattr(args, "threads_http", None)
    if isinstance(threads, int):
        require_at_least(threads, 1, "threads")
    if isinstance(threads_http, int):
        require_at_least(threads_http, 1, "threads-http")
    return ServerOptions(
        threads=threads if isinstance(threads, int) else None,
        threads_http=threads_http if isinstance(threads_http, int) else None,
        ctx_per_slot=ctx,
        extra_args=check_extra_args(extra),
    )


def load_settings(args: argparse.Namespace, n_predict: int) -> LoadSettings:
    require_at_least(n_predict, 1, "n-predict")
    if args.requests is not None:
        require_at_least(args.requests, 1, "requests")
    require_at_least(args.requests_per_client, 1, "requests-per-client")
    if args.request_timeout <= 0:
        raise LabError("--request-timeout: must be above 0")
    return LoadSettings(
        n_predict=n_predict,
        requests=args.requests,
        requests_per_client=args.requests_per_client,
        api=args.api,
        stream=args.stream,
        ignore_eos=not args.allow_eos,
        cache_prompt=args.cache_prompt,
        timeout_s=args.request_timeout,
    )


def _one(text: str, name: str) -> int:
    values = parse_positive_ints(text, name)
    if len(values) != 1:
        raise LabError(f"--{name}: this run takes one value, not a list")
    return values[0]


def _check_ctx(plan: Plan) -> None:
    """A slot that cannot hold prompt + n_predict truncates every request: refuse up front."""
    for cell in plan.cells:
        if cell.layout.ctx_per_slot < cell.n_predict + 16:
            raise LabError(
                f"--ctx-per-slot {cell.layout.ctx_per_slot} cannot hold n_predict {cell.n_predict} "
                "plus a prompt"
            )


def build_plan(args: argparse.Namespace) -> Plan:
    opts = server_options(args)
    if args.command == "test":
        load = load_settings(args, args.n_predict)
        for name in ("instances", "parallel", "concurrency"):
            require_at_least(getattr(args, name), 1, name)
        (balance,) = parse_balances(args.balance)
        plan = {
            "single": lambda: runs.single(load, opts),
            "concurrent": lambda: runs.concurrent(args.parallel, args.concurrency, load, opts),
            "round-robin": lambda: runs.round_robin(
                args.instances, args.parallel, args.concurrency, balance, load, opts
            ),
        }[args.run]()
    else:
        n_predicts = parse_positive_ints(args.n_predict, "n-predict")
        if args.run != "round-robin" and len(n_predicts) != 1:
            raise LabError("--n-predict: only the round-robin sweep takes a list")
        load = load_settings(args, n_predicts[0])
        if args.run == "threads":
            plan = runs.threads_sweep(
                parse_int_list(args.threads, "threads", allow_default=True),
                parse_int_list(args.threads_http, "threads-http", allow_default=True),
                _one(args.parallel, "parallel"),
                _one(args.concurrency, "concurrency"),
                load,
                opts,
            )
        elif args.run == "round-robin":
            (balance,) = parse_balances(args.balance)
            plan = runs.round_robin_sweep(
                _one(args.instances, "instances"),
                _one(args.parallel, "parallel"),
                n_predicts,
                parse_positive_ints(args.concurrency, "concurrency"),
                balance,
                load,
                opts,
            )
        else:
            plan = runs.full_sweep(
                parse_positive_ints(args.instances, "instances"),
                parse_positive_ints(args.parallel, "parallel"),
                parse_positive_ints(args.concurrency, "concurrency"),
                load,
                opts,
                batch_sizes=parse_int_list(args.batch_size, "batch-size", allow_default=True),
                ubatch_sizes=parse_int_list(args.ubatch_size, "ubatch-size", allow_default=True),
                balances=parse_balances(args.balance),
            )
    _check_ctx(plan)
    return plan


def _plan_config(args: argparse.Namespace, plan: Plan, lab: LabConfig) -> dict[str, Any]:
    return {
        "run": plan.run,
        "argv": sys.argv[1:],
        "cells": len(plan.cells),
        "requests": plan.requests,
        "server_bin": str(lab.server_bin),
        "model": str(lab.model),
        "nginx_bin": str(lab.nginx_bin) if lab.nginx_bin else None,
        "host": lab.host,
        "base_port": lab.base_port,
        "nginx_port": lab.nginx_port,
        "options": {k: v for k, v in vars(args).items() if k != "api_key"},
    }


def cmd_run(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    lab = lab_config(args, need_nginx=any(c.layout.proxied for c in plan.cells))
    check_plan_ports(plan, lab)
    writer = ResultsWriter(
        lab.results_dir,
        plan.run,
        _plan_config(args, plan, lab),
        machine_facts(lab.server_bin, lab.model),
    )
    progress = ProgressPrinter(sys.stderr)
    load = load_settings(args, plan.cells[0].n_predict)
    runner = PlanRunner(plan, lab, load, progress.handle, new_run_dir(plan.run), writer)
    try:
        outcome = asyncio.run(runner.run())
    finally:
        writer.close()
        progress.close()
    print(format_table(list(outcome.rows), SUMMARY_COLUMNS))
    print(f"results: {writer.csv_path} and {writer.jsonl_path}")
    return 0 if outcome.cells_failed == 0 else 1


def _layout_for_cluster(args: argparse.Namespace) -> tuple[Layout, str]:
    require_at_least(args.instances, 1, "instances")
    require_at_least(args.parallel, 1, "parallel")
    opts = server_options(args)
    (balance,) = parse_balances(args.balance)
    layout = Layout(
        instances=args.instances,
        parallel=args.parallel,
        ctx_size=computed_ctx_size(args.parallel, 1024, opts.ctx_per_slot),
        threads=opts.threads,
        threads_http=opts.threads_http,
        extra_args=opts.extra_args,
        proxied=True,
    )
    return layout, balance


def cmd_cluster(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.action in ("start", "serve"):
        layout, balance = _layout_for_cluster(args)
        lab = lab_config(args, need_nginx=True)
        if args.action == "serve":
            return asyncio.run(standing_cluster.serve(lab, layout, balance))  # type: ignore[arg-type]
        serve_args = list(argv[argv.index("start") + 1 :])
        state = standing_cluster.start_detached(
            lab, layout.instances, serve_args, lab.ready_timeout_s + 60
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
    require_at_least(args.concurrency, 1, "concurrency")
    load = load_settings(args, args.n_predict)
    if not args.url.startswith(("http://", "https://")):
        raise LabError(f"--url: {args.url!r} is not an http:// or https:// URL")
    spec = LoadSpec(
        url=args.url.rstrip("/"),
        concurrency=args.concurrency,
        requests=load.requests_for(args.concurrency),
        n_predict=load.n_predict,
        api=load.api,
        stream=load.stream,
        ignore_eos=load.ignore_eos,
        cache_prompt=load.cache_prompt,
        timeout_s=load.timeout_s,
        api_key=args.api_key,
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
            return cmd_cluster(args, argv)
        if args.command == "load":
            return cmd_load(args)
        if args.command == "analyze":
            return cmd_analyze(args)
        return cmd_doctor(args)
    except LabError as exc:
        print(f"llamalab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llamalab: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
