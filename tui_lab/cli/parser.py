"""The `llamalab` command line: its subcommands, and their flags from the settings registry."""

from __future__ import annotations

import argparse
from typing import NoReturn

from tui_lab import __version__
from tui_lab.engine.settings import registry
from tui_lab.engine.settings.registry import SECTIONS, Setting
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


GROUP_TITLES = {
    "servers": "servers",
    "load": "load",
    "search": "adaptive search (sweep adaptive: same lists as sweep full)",
}


def add_settings(
    p: argparse.ArgumentParser,
    command: str,
    grouped: tuple[str, ...] = ("servers", "load", "search"),
) -> None:
    """Every setting `command` takes, as the registry declares it: its flag, default and help,
    in `--help` sections; the `grouped` sections under their own heading."""
    groups: dict[str, argparse._ActionsContainer] = {}
    for section in SECTIONS:
        for s in registry.settings():
            if s.section != section or command not in s.commands:
                continue
            target: argparse._ActionsContainer = p
            if section in grouped:
                target = groups.setdefault(section, p.add_argument_group(GROUP_TITLES[section]))
            _add_flag(target, s, command)


def _add_flag(target: argparse._ActionsContainer, s: Setting, command: str) -> None:
    flag, help_text = f"--{s.option}", s.help_for(command)
    if s.is_switch:
        target.add_argument(flag, action="store_true", help=help_text)
    elif s.joined:
        target.add_argument(
            flag,
            default=s.flag_default(command),
            action=JoinedAction,
            const=s.joined,
            help=help_text,
        )
    else:
        target.add_argument(flag, default=s.flag_default(command), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llamalab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llamalab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    test = sub.add_parser("test", help="one measurement: single, concurrent or round-robin")
    test.add_argument("run", choices=("single", "concurrent", "round-robin"))
    add_settings(test, "test")

    sweep = sub.add_parser(
        "sweep", help="a grid of measurements: threads, round-robin, full; or the adaptive search"
    )
    sweep.add_argument(
        "run",
        choices=("threads", "round-robin", "full", "adaptive", *SWEEP_CONTROLS),
        help="the sweep to run; or resume FILE, attach to or stop a detached sweep",
    )
    sweep.add_argument("file", nargs="?", help="resume: the interrupted sweep's .jsonl or .csv")
    add_settings(sweep, "sweep")
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
        add_settings(c, "cluster")
        if name == "start":
            c.add_argument(
                "--no-preflight",
                action="store_true",
                help="start even when the memory pre-flight says it does not fit",
            )
    status = csub.add_parser("status", help="endpoint, nginx and each instance")
    status.add_argument("--json", action="store_true")
    csub.add_parser("stop", help="stop the standing cluster")

    load = sub.add_parser("load", help="drive load against any llama-server-compatible endpoint")
    load.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    add_settings(load, "load", grouped=("load",))
    load.add_argument("--json", action="store_true")

    analyze = sub.add_parser("analyze", help="top cells of a results file")
    analyze.add_argument("file")
    analyze.add_argument("--field", default="output_tok_per_s")
    analyze.add_argument("--order", choices=("asc", "desc"), default="desc")
    analyze.add_argument("--count", type=int, default=10)

    report = sub.add_parser("report", help="a results file as one HTML file and Markdown")
    report.add_argument("file", help="the sweep's .jsonl or .csv")
    report.add_argument(
        "--out", help="the HTML file to write (default: <results>.report.html); .md beside it"
    )

    compare = sub.add_parser("compare", help="matching cells of two results files side by side")
    compare.add_argument("a", help="the first sweep's .jsonl or .csv (A)")
    compare.add_argument("b", help="the second (B): deltas are B - A")

    pre = sub.add_parser("preflight", help="will N servers of this model fit in free memory?")
    add_settings(pre, "preflight", grouped=())
    pre.add_argument(
        "--ctx-size", default="", help="context of one server (default: parallel x per-slot need)"
    )

    sub.add_parser("doctor", help="show which llama-server, nginx and model would be used")
    cleanup = sub.add_parser("cleanup", help="stop servers an earlier lab left running")
    cleanup.add_argument("--dry-run", action="store_true", help="list them, stop nothing")
    return parser


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The flags this command has, as the user typed them, onto the shared settings."""
    kind = f"{args.command}-{args.run}" if args.command in ("test", "sweep") else "test-round-robin"
    given = {
        s.name: value
        for s in registry.settings()
        if s.name != "kind" and (value := getattr(args, s.name, None)) is not None
    }
    return defaults_for(kind).with_values(**given)
