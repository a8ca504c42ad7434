"""Every setting, declared once: its default, how its text is parsed, who reads it, how it is shown.

The CLI's flags and `--help` (cli/parser.py), the configure form's rows (screens/configure.py),
preset files (presets.py), `cluster start`'s flags and the typed spec (spec.py) are all built
from `SETTINGS`, so adding a setting is one `Setting(...)` here plus the code that uses its
value. The order is the form's: groups as they appear, rows in the order given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tui_lab.engine.errors import LabError
from tui_lab.engine.load.workloads import DEFAULT_SESSION_HEADER
from tui_lab.engine.plan import search
from tui_lab.engine.plan.config import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    DEFAULT_NGINX_PORT,
)
from tui_lab.engine.settings import values as v

RUN_KINDS: dict[str, str] = {
    "test-single": "Single request: one server, one slot, one client",
    "test-concurrent": "Concurrent: one server with P slots under C clients",
    "test-round-robin": "Round robin: N servers behind nginx",
    "sweep-threads": "Threads sweep: --threads x --threads-http on one server",
    "sweep-round-robin": "Round-robin sweep: n_predict x concurrency through nginx",
    "sweep-full": "Full sweep: instances x parallel x concurrency (x batch x ubatch x balance)",
    "sweep-adaptive": "Adaptive sweep: the full sweep's cells, searched for the best quickly",
}
# Besides a run kind, the contexts a spec is parsed for: the standing cluster (one value of each
# setting it reads), and what every run reads alike (where things are, how they are reached),
# lists kept whole.
CLUSTER = "cluster"
COMMON = "common"

EVERY_RUN = frozenset(RUN_KINDS)
CLIENTS = EVERY_RUN - {"test-single"}
PROXIED = frozenset({"test-round-robin", "sweep-round-robin", "sweep-full", "sweep-adaptive"})
FULL = frozenset({"sweep-full", "sweep-adaptive"})
THREADS_SWEEP = frozenset({"sweep-threads"})
ROUND_ROBIN_SWEEP = frozenset({"sweep-round-robin"})
ADAPTIVE = frozenset({"sweep-adaptive"})

# The CLI commands that take settings as flags; `cluster` is `cluster start` (and `serve`).
RUNS = frozenset({"test", "sweep"})
SERVERS = frozenset({"test", "sweep", "cluster"})
LOAD = frozenset({"test", "sweep", "load"})
# Where a flag goes in `--help`: before the groups, "servers", "load", ..., in this order.
SECTIONS = ("cell", "servers", "load", "results", "search", "sweep")

Default = str | bool


@dataclass(frozen=True)
class Setting:
    """One knob: what the user types (text, or a bool for a switch) and everything about it.

    `kinds` None: every run and the standing cluster read it, so it is always checked and always
    shown. Otherwise only those run kinds read it (the form hides it for the others and nothing
    checks it there), and the cluster when `cluster` is set. `lists_in`: the kinds that sweep
    it, where `parse` takes a list; the others take one value (`one`, else `parse` with a check
    that there is one).
    """

    name: str
    default: Default
    label: str
    group: str
    parse: v.Parser | None = None  # None: used as typed (a path, a switch)
    one: v.Parser | None = None
    kinds: frozenset[str] | None = None
    cluster: bool = False
    lists_in: frozenset[str] = frozenset()
    unit: str = ""
    help: str | None = None
    placeholder: str = ""
    choices: tuple[tuple[str, str], ...] = ()  # a menu: (label, value)
    secret: bool = False
    section: str = "servers"
    commands: frozenset[str] = RUNS
    # Per command: another --help text, or another flag default (None: from the run kind).
    command_help: Mapping[str, str | None] = field(default_factory=dict)
    command_default: Mapping[str, str | None] = field(default_factory=dict)
    joined: str = ""  # a repeatable flag: its values joined with this

    @property
    def option(self) -> str:
        """The flag's name without dashes, as messages say it: `n-predict`."""
        return self.name.replace("_", "-")

    @property
    def is_switch(self) -> bool:
        return isinstance(self.default, bool)

    def reads(self, context: str) -> bool:
        """Whether a run of this kind (or the cluster) uses the setting."""
        if self.kinds is None:
            return True
        if context == COMMON:
            return False
        return self.cluster if context == CLUSTER else context in self.kinds

    def parser(self, context: str) -> v.Parser | None:
        """The parse for this context: a list where it is swept, else one value."""
        if self.parse is None or not self.lists_in or context in self.lists_in | {COMMON}:
            return self.parse
        return self.one or v.single(self.parse)  # type: ignore[arg-type]

    def help_for(self, command: str) -> str | None:
        return self.command_help.get(command, self.help)

    def flag_default(self, command: str) -> Default | None:
        return self.command_default.get(command, self.default)


_SWEEP_SUFFIX = "; a list in the threads sweep"
_BY_KIND = {"test": None, "sweep": None, "cluster": None, "load": None}

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "kind",
        "sweep-full",
        "",
        "Run",
        parse=lambda text, _: _kind(text),
        choices=tuple((label, kind) for kind, label in RUN_KINDS.items()),
        commands=frozenset(),  # the CLI's positional `run`
    ),
    Setting(
        "instances",
        "1,2",
        "Instances",
        "Run",
        v.parse_positive_ints,
        kinds=PROXIED,
        cluster=True,
        lists_in=FULL,
        help="servers behind nginx (round-robin; default 2)",
        section="cell",
        commands=RUNS | {"cluster", "preflight"},
        command_help={
            "sweep": "list (full; default 1,2); one value (round-robin; default 2)",
            "cluster": None,
            "preflight": None,
        },
        command_default={**_BY_KIND, "cluster": "2", "preflight": "1"},
    ),
    Setting(
        "parallel",
        "1,4",
        "Parallel slots",
        "Run",
        v.parse_positive_ints,
        kinds=CLIENTS,
        cluster=True,
        lists_in=FULL,
        help="slots per server (default 4)",
        section="cell",
        commands=RUNS | {"cluster", "preflight"},
        command_help={
            "sweep": "list (full; default 1,4); one value otherwise (4)",
            "cluster": None,
            "preflight": "slots per server",
        },
        command_default={**_BY_KIND, "cluster": "4", "preflight": "1"},
    ),
    Setting(
        "concurrency",
        "1,8",
        "Concurrency",
        "Run",
        v.parse_positive_ints,
        kinds=CLIENTS,
        lists_in=FULL | ROUND_ROBIN_SWEEP,
        help="clients in flight (default 8)",
        section="cell",
        commands=RUNS | {"load"},
        command_help={"sweep": "list (default 1,8); one value for threads (8)", "load": None},
        command_default={**_BY_KIND, "load": "8"},
    ),
    Setting(
        "rate",
        "",
        "Rate (open loop)",
        "Run",
        v.rates,
        kinds=CLIENTS,
        lists_in=FULL | ROUND_ROBIN_SWEEP,
        unit="req/s",
        help="open loop: requests arriving per second, whatever the servers do (concurrency "
        "caps those in flight); blank: closed loop, C clients",
        placeholder="blank: closed loop; e.g. 0.5,1,2",
        section="cell",
        commands=LOAD,
        command_help={
            "sweep": "open loop: requests/s, a list like concurrency (blank: closed loop)"
        },
    ),
    Setting(
        "n_predict",
        "64",
        "n_predict",
        "Run",
        v.parse_positive_ints,
        kinds=EVERY_RUN,
        lists_in=ROUND_ROBIN_SWEEP,
        unit="tokens",
        help="tokens per request",
        section="load",
        commands=LOAD | {"preflight"},
        command_help={
            "sweep": "tokens per request; a list in the round-robin sweep",
            "preflight": "tokens per request, sizes each slot",
        },
    ),
    Setting(
        "threads",
        "auto",
        "Threads",
        "Run",
        v.parse_threads,
        kinds=EVERY_RUN,
        cluster=True,
        lists_in=THREADS_SWEEP,
        help="compute threads per instance: auto (the physical cores split among the "
        "instances), N, or default (llama-server's own)",
        placeholder="auto (cores split among instances), default, or a number",
        commands=SERVERS,
        command_help={
            "sweep": "compute threads per instance: auto (the physical cores split among the "
            "instances), N, or default (llama-server's own)" + _SWEEP_SUFFIX
        },
    ),
    Setting(
        "threads_http",
        "default",
        "HTTP threads",
        "Run",
        v.optional_ints,
        one=v.one_optional_count,
        kinds=EVERY_RUN,
        cluster=True,
        lists_in=THREADS_SWEEP,
        help="llama-server --threads-http (default: enough for each instance's clients)",
        placeholder="default, or a number",
        commands=SERVERS,
        command_help={
            "sweep": "llama-server --threads-http (default: enough for each instance's clients)"
            + _SWEEP_SUFFIX
        },
    ),
    Setting(
        "placement",
        "shared",
        "Placement",
        "Run",
        v.parse_placements,
        kinds=EVERY_RUN,
        cluster=True,
        lists_in=FULL,
        help="shared, pinned (own CPU cores per instance), spread (instance i on GPU i mod G), "
        "or pinned+spread",
        placeholder="shared, pinned (own cores), spread (own GPU), pinned+spread",
        commands=SERVERS,
        command_help={
            "sweep": "shared, pinned (own CPU cores per instance), spread (instance i on GPU i "
            "mod G), or pinned+spread; a list in full sweeps"
        },
    ),
    Setting(
        "gpus",
        "all",
        "GPUs",
        "Run",
        v.parse_gpus,
        kinds=EVERY_RUN,
        cluster=True,
        help="GPUs the instances may use: all, or NVML indices 0,1",
        placeholder="all, or GPU numbers like 0,1",
        commands=SERVERS,
    ),
    Setting(
        "batch_size",
        "default",
        "Batch size",
        "Run",
        v.optional_ints,
        one=v.one_optional_count,
        kinds=FULL,
        lists_in=FULL,
        help="list (full): 512,2048,default",
        section="cell",
        commands=frozenset({"sweep"}),
    ),
    Setting(
        "ubatch_size",
        "default",
        "Ubatch size",
        "Run",
        v.optional_ints,
        one=v.one_optional_count,
        kinds=FULL,
        lists_in=FULL,
        help="list (full)",
        section="cell",
        commands=frozenset({"sweep"}),
    ),
    Setting(
        "balance",
        "round_robin",
        "Balance",
        "Run",
        v.parse_balances,
        kinds=PROXIED,
        cluster=True,
        lists_in=FULL,
        help="round_robin, least_conn or session (the same session header, the same instance)",
        section="cell",
        commands=RUNS | {"cluster"},
        command_help={"sweep": "list (full): round_robin,least_conn,session", "cluster": None},
    ),
    Setting(
        "plateau",
        str(round(search.DEFAULT_PLATEAU * 100)),
        "Plateau % (stop)",
        "Run",
        v.percentage,
        kinds=ADAPTIVE,
        unit="%",
        help="stop raising a layout's concurrency once a step gains under this %% (default 3)",
        section="search",
        commands=frozenset({"sweep"}),
        command_default={"sweep": None},
    ),
    Setting(
        "finalists",
        str(search.DEFAULT_FINALISTS),
        "Finalists",
        "Run",
        v.whole_number,
        kinds=ADAPTIVE,
        help="best probes confirmed with full cells (default 3)",
        section="search",
        commands=frozenset({"sweep"}),
        command_default={"sweep": None},
    ),
    Setting(
        "max_p99_ms",
        "",
        "Max p99 latency ms",
        "Run",
        v.optional_number,
        kinds=ADAPTIVE,
        unit="ms",
        help="goodput: best tok/s with p99 latency under this",
        placeholder="blank: no bound",
        section="search",
        commands=frozenset({"sweep"}),
        command_default={"sweep": None},
    ),
    Setting(
        "max_ttft_ms",
        "",
        "Max p99 TTFT ms",
        "Run",
        v.optional_number,
        kinds=ADAPTIVE,
        unit="ms",
        help="goodput: best tok/s with p99 TTFT under this (--stream)",
        placeholder="blank: no bound (needs streaming)",
        section="search",
        commands=frozenset({"sweep"}),
        command_default={"sweep": None},
    ),
    Setting(
        "api",
        "completion",
        "API",
        "Load",
        v.api,
        help="completion or chat (/v1/chat/completions)",
        choices=(
            ("completion (/completion)", "completion"),
            ("chat (/v1/chat/completions)", "chat"),
        ),
        section="load",
        commands=LOAD,
    ),
    Setting(
        "requests",
        "",
        "Requests",
        "Load",
        v.optional_whole_number,
        help="measured requests per cell (default: requests-per-client x concurrency)",
        placeholder="blank: concurrency x requests/client",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "requests_per_client",
        "2",
        "Requests/client",
        "Load",
        v.whole_number,
        section="load",
        commands=LOAD,
    ),
    Setting(
        "repeats",
        "1",
        "Repeats",
        "Load",
        v.whole_number,
        help="measure each cell this many times, interleaved (every cell once, then again), "
        "for a mean and a 95%% confidence interval (default 1)",
        section="load",
    ),
    Setting(
        "request_timeout",
        "600",
        "Request timeout s",
        "Load",
        v.number,
        unit="s",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "stall_timeout",
        "60",
        "Stall timeout s",
        "Load",
        v.number,
        unit="s",
        help="a streamed reply silent this long once it has begun ends as stalled "
        "(default %(default)s)",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "stream",
        False,
        "Stream tokens",
        "Load",
        help="stream tokens (gives TTFT, ITL, TPOT)",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "allow_eos",
        False,
        "Allow early stop (EOS)",
        "Load",
        help="let requests stop at end of sequence",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "cache_prompt",
        False,
        "Cache the prompt",
        "Load",
        help="let requests hit the prompt cache",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "arrival",
        "poisson",
        "Arrivals",
        "Load",
        v.arrival,
        kinds=CLIENTS,
        help="open loop: poisson (seeded, like users typing) or constant (even spacing)",
        choices=(("poisson: random, seeded", "poisson"), ("constant: evenly spaced", "constant")),
        section="load",
        commands=LOAD,
    ),
    Setting(
        "burst",
        "1",
        "Burst",
        "Load",
        v.whole_number,
        kinds=CLIENTS,
        help="open loop: requests arriving together; the groups come at rate / burst, so the "
        "mean rate stays --rate (default 1: one at a time)",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "workload",
        "fixed",
        "Workload",
        "Workload",
        v.workload,
        kinds=EVERY_RUN,
        help="fixed (one short prompt, the default), synthetic, shared-prefix, multi-turn or file",
        choices=(
            ("fixed: one short prompt", "fixed"),
            ("synthetic: prompt and output lengths", "synthetic"),
            ("shared-prefix: one system prompt, unique parts", "shared-prefix"),
            ("multi-turn: conversations (chat)", "multi-turn"),
            ("file: your JSONL requests", "file"),
        ),
        section="load",
        commands=LOAD,
    ),
    Setting(
        "prompt_tokens",
        "256",
        "Prompt tokens",
        "Workload",
        v.token_length,
        kinds=EVERY_RUN,
        unit="tokens",
        help="synthetic: the prompt; shared-prefix: the unique part; multi-turn: each user "
        "message. N, uniform(min,max) or normal(mean,sd,min,max)",
        placeholder="N, uniform(min,max), normal(mean,sd,min,max)",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "output_tokens",
        "",
        "Output tokens",
        "Workload",
        v.optional_token_length,
        kinds=EVERY_RUN,
        unit="tokens",
        help="tokens generated per request of a synthetic, shared-prefix or multi-turn "
        "workload (default: n_predict); N, uniform(...) or normal(...)",
        placeholder="blank: n_predict",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "prefix_tokens",
        "512",
        "Prefix tokens",
        "Workload",
        v.whole_number,
        kinds=EVERY_RUN,
        unit="tokens",
        help="shared-prefix: tokens of the system prompt the requests share",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "prefix_groups",
        "1",
        "Prefix groups",
        "Workload",
        v.whole_number,
        kinds=EVERY_RUN,
        help="shared-prefix: groups of requests, each sharing its own prefix",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "sessions",
        "4",
        "Sessions",
        "Workload",
        v.whole_number,
        kinds=EVERY_RUN,
        help="multi-turn: conversations per cell",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "turns",
        "4",
        "Turns",
        "Workload",
        v.whole_number,
        kinds=EVERY_RUN,
        help="multi-turn: turns per conversation",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "system_tokens",
        "512",
        "System tokens",
        "Workload",
        v.count_or_zero,
        kinds=EVERY_RUN,
        unit="tokens",
        help="multi-turn: tokens of the system prompt every conversation starts with (0: none)",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "think_time",
        "0",
        "Think time s",
        "Workload",
        v.think_time,
        kinds=EVERY_RUN,
        unit="s",
        help="multi-turn: seconds between an answer and the next turn: N, or exp(mean)",
        placeholder="seconds, or exp(mean)",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "workload_file",
        "",
        "Workload file",
        "Workload",
        kinds=EVERY_RUN,
        help='file: JSONL, one prompt (a string or {"prompt": ...}) or {"messages": [...]} '
        "a line, each optionally with max_tokens",
        placeholder="path to a .jsonl file",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "seed",
        "0",
        "Seed",
        "Workload",
        v.count_or_zero,
        kinds=EVERY_RUN,
        help="seed of the workload's lengths, texts and think times",
        section="load",
        commands=LOAD,
    ),
    Setting(
        "session_header",
        DEFAULT_SESSION_HEADER,
        "Session header",
        "Workload",
        v.header_name,  # every run reads it: nginx is configured from what all runs share
        help="header carrying a conversation's id (multi-turn sends it; --balance session "
        "keys on it; default %(default)s)",
        section="load",
        commands=LOAD | {"cluster"},
    ),
    Setting(
        "ctx_per_slot",
        "",
        "Context per slot",
        "Servers",
        v.slot_context,
        unit="tokens",
        help="context tokens per slot",
        placeholder="blank: enough for prompt + n_predict",
        commands=SERVERS,
    ),
    Setting(
        "server_args",
        "",
        "Extra server args",
        "Servers",
        v.server_args,
        help='extra llama-server arguments, e.g. "-ngl 99 -fa on"',
        placeholder="e.g. --flash-attn on -ngl 99",
        commands=SERVERS | {"preflight"},
        command_help={"preflight": 'llama-server arguments, e.g. "-ctk q8_0"'},
    ),
    Setting(
        "server_dim",
        "",
        "Server-flag dims",
        "Servers",
        v.parse_server_dims,
        kinds=FULL,
        help='full sweeps: alternatives of server flags to compare, e.g. "-fa on|-fa off" '
        "(repeatable: every combination is measured)",
        placeholder="e.g. -fa on|-fa off ; -ctk f16|-ctk q8_0",
        commands=frozenset({"sweep"}),
        joined=";",
    ),
    Setting(
        "ready_timeout",
        "300",
        "Ready timeout s",
        "Servers",
        v.number,
        unit="s",
        help="seconds for a server to load",
        commands=SERVERS,
    ),
    Setting(
        "liveness_timeout",
        "10",
        "Liveness timeout s",
        "Servers",
        v.seconds_or_off,
        unit="s",
        help="a server silent on /health this long during a cell is hung: it is killed, so "
        "its requests fail at once, and the cell's row names it (0 or off: no watch; "
        "default %(default)s)",
        command_help={
            "cluster": "an instance whose /health has not answered this long is hung: the "
            "cluster takes it out of nginx's rotation and restarts it (0 or off: only a dead "
            "one is; default %(default)s)"
        },
        commands=SERVERS,
    ),
    Setting(
        "stop_on_error",
        False,
        "Stop the sweep at the first failed cell",
        "Servers",
        help="stop at the first failed cell",
        section="results",
    ),
    Setting(
        "upstream_keepalive",
        False,
        "nginx upstream keep-alive",
        "Servers",
        help="keep nginx-to-server connections open (non-streaming loads only: llama-server "
        "closes them after streamed replies)",
        commands=SERVERS,
    ),
    Setting(
        "detach",
        False,
        "Detached: the run goes on without this terminal",
        "Servers",
        help="run on without this terminal (see attach, stop)",
        section="sweep",
        commands=frozenset({"sweep"}),
    ),
    Setting(
        "model",
        "",
        "Model",
        "Where and how",
        v.model_entries,
        one=v.one_model,
        lists_in=FULL,
        help="GGUF model file (default: bundled Gemma 3 270M)",
        placeholder="blank: the bundled default model; full sweeps: a.gguf|b.gguf",
        commands=SERVERS | {"preflight"},
        command_help={
            "sweep": "GGUF model file (default: bundled Gemma 3 270M); full sweeps take several: "
            "repeat the flag or a.gguf|b.gguf"
        },
        joined="|",
    ),
    Setting(
        "server_bin",
        "",
        "llama-server",
        "Where and how",
        help="llama-server to use (default: LLAMA_SERVER_BIN, PATH, ./llama.cpp/build/bin, "
        "the bundled CPU build)",
        placeholder="blank: LLAMA_SERVER_BIN, PATH or the bundled build",
        commands=SERVERS,
    ),
    Setting(
        "nginx_bin",
        "",
        "nginx",
        "Where and how",
        help="nginx to use (default: PATH, /usr/sbin/nginx)",
        placeholder="blank: NGINX_BIN or PATH",
        commands=SERVERS,
    ),
    Setting(
        "host",
        DEFAULT_HOST,
        "Bind address",
        "Where and how",
        v.check_host,
        help="address to bind (default %(default)s)",
        commands=SERVERS,
    ),
    Setting(
        "base_port",
        str(DEFAULT_BASE_PORT),
        "Base port",
        "Where and how",
        v.port,
        help="port of instance 0",
        commands=SERVERS,
    ),
    Setting(
        "nginx_port",
        str(DEFAULT_NGINX_PORT),
        "nginx port",
        "Where and how",
        v.port,
        commands=SERVERS,
    ),
    Setting(
        "results",
        "results",
        "Results folder",
        "Where and how",
        help="results folder (default %(default)s)",
        section="results",
    ),
    Setting(
        "api_key",
        "",
        "API key",
        "Where and how",
        v.check_api_key,
        help="require this key at the servers and nginx",
        placeholder="blank: no key",
        secret=True,
        commands=SERVERS | {"load"},
        command_help={"load": None},
    ),
)


def _kind(text: str) -> str:
    if text not in RUN_KINDS:
        raise LabError(f"unknown run {text!r}; runs: {', '.join(RUN_KINDS)}")
    return text


def settings() -> tuple[Setting, ...]:
    """The registry as it is now (a test may add to it), in the form's order."""
    return SETTINGS


def setting(name: str) -> Setting:
    for s in SETTINGS:
        if s.name == name:
            return s
    raise KeyError(name)
