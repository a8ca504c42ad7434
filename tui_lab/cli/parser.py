"""The `llamalab` command line: its subcommands and flags."""

from __future__ import annotations

import argparse
import dataclasses
from typing import NoReturn

from tui_lab import __version__
from tui_lab.engine.plan.config import DEFAULT_BASE_PORT, DEFAULT_HOST, DEFAULT_NGINX_PORT
from tui_lab.engine.settings.run_settings import RunSettings, defaults_for

SWEEP_CONTROLS = ("resume", "attach", "stop")


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; a user needs just the error and where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class JoinedAction(argparse.Action):
    """A repeatable flag whose values join into the one text setting it fills (`--model a
    --model b` is `a|b`), so the CLI, the form and presets hold the same text."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        earlier = getattr(namespace, self.dest)
        if earlier not in (None, self.default):
            values = f"{earlier}{self.const}{values}"
        setattr(namespace, self.dest, str(values))


def _add_server_options(
    p: argparse.ArgumentParser, *, threads_help: str = "", sweeps: bool = False
) -> None:
    g = p.add_argument_group("servers")
    g.add_argument(
        "--server-bin",
        default="",
        help="llama-server to use (default: LLAMA_SERVER_BIN, PATH, ./llama.cpp/build/bin, "
        "the bundled CPU build)",
    )
    g.add_argument(
        "--model",
        default="",
        action=JoinedAction,
        const="|",
        help="GGUF model file (default: bundled Gemma 3 270M)"
        + ("; full sweeps take several: repeat the flag or a.gguf|b.gguf" if sweeps else ""),
    )
    g.add_argument("--nginx-bin", default="", help="nginx to use (default: PATH, /usr/sbin/nginx)")
    g.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    g.add_argument("--base-port", default=str(DEFAULT_BASE_PORT), help="port of instance 0")
    g.add_argument("--nginx-port", default=str(DEFAULT_NGINX_PORT))
    g.add_argument(
        "--threads",
        default="auto",
        help="compute threads per instance: auto (the physical cores split among the "
        "instances), N, or default (llama-server's own)" + threads_help,
    )
    g.add_argument(
        "--placement",
        default="shared",
        help="shared, pinned (own CPU cores per instance), spread (instance i on GPU i mod G), "
        "or pinned+spread" + ("; a list in full sweeps" if sweeps else ""),
    )
    g.add_argument(
        "--gpus", default="all", help="GPUs the instances may use: all, or NVML indices 0,1"
    )
    if sweeps:
        g.add_argument(
            "--server-dim",
            default="",
            action=JoinedAction,
            const=";",
            help='full sweeps: alternatives of server flags to compare, e.g. "-fa on|-fa off" '
            "(repeatable: every combination is measured)",
        )
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


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adaptive search (sweep adaptive: same lists as sweep full)")
    g.add_argument(
        "--plateau",
        help="stop raising a layout's concurrency once a step gains under this %% (default 3)",
    )
    g.add_argument("--finalists", help="best probes confirmed with full cells (default 3)")
    g.add_argument("--max-p99-ms", help="goodput: best tok/s with p99 latency under this")
    g.add_argument("--max-ttft-ms", help="goodput: best tok/s with p99 TTFT under this (--stream)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llamalab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llamalab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    test = sub.add_parser("test", help="one measurement: single, concurrent or round-robin")
    test.add_argument("run", choices=("single", "concurrent", "round-robin"))
    test.add_argument("--instances", help="servers behind nginx (round-robin; default 2)")
    test.add_argument("--parallel", help="slots per server (default 4)")
    test.add_argument("--concurrency", help="clients in flight (default 8)")
    test.add_argument("--balance", default="round_robin", help="round_robin or least_conn")
    _add_server_options(test)
    _add_load_options(test)
    _add_results_options(test)

    sweep = sub.add_parser(
        "sweep", help="a grid of measurements: threads, round-robin, full; or the adaptive search"
    )
    sweep.add_argument(
        "run",
        choices=("threads", "round-robin", "full", "adaptive", *SWEEP_CONTROLS),
        help="the sweep to run; or resume FILE, attach to or stop a detached sweep",
    )
    sweep.add_argument("file", nargs="?", help="resume: the interrupted sweep's .jsonl or .csv")
    sweep.add_argument(
        "--instances", help="list (full; default 1,2); one value (round-robin; default 2)"
    )
    sweep.add_argument("--parallel", help="list (full; default 1,4); one value otherwise (4)")
    sweep.add_argument("--concurrency", help="list (default 1,8); one value for threads (8)")
    sweep.add_argument("--batch-size", default="default", help="list (full): 512,2048,default")
    sweep.add_argument("--ubatch-size", default="default", help="list (full)")
    sweep.add_argument(
        "--balance", default="round_robin", help="list (full): round_robin,least_conn"
    )
    _add_server_options(sweep, threads_help="; a list in the threads sweep", sweeps=True)
    _add_load_options(sweep, n_predict_help="; a list in the round-robin sweep")
    _add_results_options(sweep)
    _add_search_options(sweep)
    sweep.add_argument(
        "--detach", action="store_true", help="run on without this terminal (see attach, stop)"
    )
    sweep.add_argument(
        "--retry-failed", action="store_true", help="resume: run the failed cells again too"
    )
    sweep.add_argument("--detached-run-dir", help=argparse.SUPPRESS)

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
        if name == "start":
            c.add_argument(
                "--no-preflight",
                action="store_true",
                help="start even when the memory pre-flight says it does not fit",
            )
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

    pre = sub.add_parser("preflight", help="will N servers of this model fit in free memory?")
    pre.add_argument("--model", default="", help="GGUF model file (default: bundled Gemma 3 270M)")
    pre.add_argument("--instances", default="1")
    pre.add_argument("--parallel", default="1", help="slots per server")
    pre.add_argument(
        "--ctx-size", default="", help="context of one server (default: parallel x per-slot need)"
    )
    pre.add_argument("--n-predict", default="64", help="tokens per request, sizes each slot")
    pre.add_argument("--server-args", default="", help='llama-server arguments, e.g. "-ctk q8_0"')

    sub.add_parser("doctor", help="show which llama-server, nginx and model would be used")
    cleanup = sub.add_parser("cleanup", help="stop servers an earlier lab left running")
    cleanup.add_argument("--dry-run", action="store_true", help="list them, stop nothing")
    return parser


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The flags this command has, as the user typed them, onto the shared settings."""
    kind = f"{args.command}-{args.run}" if args.command in ("test", "sweep") else "test-round-robin"
    given = {
        f.name: value
        for f in dataclasses.fields(RunSettings)
        if f.name != "kind" and (value := getattr(args, f.name, None)) is not None
    }
    return defaults_for(kind).with_values(**given)
