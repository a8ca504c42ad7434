"""The plan's types (layouts, cells, client load, the lab's configuration) and the llama-server
command line built from them. Settings are parsed into these in engine/settings/.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from tui_lab.engine.load.arrivals import ArrivalProcess
from tui_lab.engine.load.workloads import DEFAULT_SESSION_HEADER, WorkloadSettings

Balance = Literal["round_robin", "least_conn", "session"]
Api = Literal["completion", "chat"]
BALANCES: tuple[Balance, ...] = ("round_robin", "least_conn", "session")
# How many compute threads an instance runs (engine/processes/placement.py): a count, "auto" (the
# physical cores split among the instances), or None for llama-server's own default.
Threads = int | Literal["auto"] | None
Placement = Literal["shared", "pinned", "spread", "pinned+spread"]
PLACEMENTS: tuple[Placement, ...] = ("shared", "pinned", "spread", "pinned+spread")


def pins_cpus(placement: Placement) -> bool:
    return placement in ("pinned", "pinned+spread")


def spreads_gpus(placement: Placement) -> bool:
    return placement in ("spread", "pinned+spread")


# Prompt tokens budgeted per slot on top of n_predict when the context is computed: the default
# prompt is ~30 tokens and a chat template adds a few dozen more.
PROMPT_TOKEN_BUDGET = 128
CTX_ROUNDING = 256

DEFAULT_HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 8100
DEFAULT_NGINX_PORT = 8000


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """Beyond loopback the servers and nginx are on the network; say so wherever it is chosen,
    louder without an API key. None for loopback, and for hosts check_host will refuse anyway."""
    if host == "localhost":
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_loopback:
        return None
    where = "every interface" if address.is_unspecified else host
    if api_key:
        return f"listening on {where}: reachable from the network, clients need the API key"
    return f"listening on {where} without an API key: anyone who can reach this machine can use it"


CTX_FLAGS = ("-c", "--ctx-size")
PARALLEL_FLAGS = ("-np", "--parallel")


def _has_flag(args: tuple[str, ...], flags: tuple[str, ...]) -> bool:
    return any(a in flags or any(a.startswith(f + "=") for f in flags) for a in args)


def flag_value(args: tuple[str, ...], flags: tuple[str, ...]) -> str | None:
    """The value given to `flags` in extra arguments (`-c 4096` or `--ctx-size=4096`); the last
    one wins, as in llama-server's own parser. None when the flag is absent or has no value."""
    value = None
    for i, arg in enumerate(args):
        name, equals, inline = arg.partition("=")
        if name in flags:
            value = inline if equals else (args[i + 1] if i + 1 < len(args) else None)
    return value


@dataclass(frozen=True)
class Layout:
    """Everything that needs a server restart when it changes; equal layouts reuse servers."""

    instances: int
    parallel: int
    ctx_size: int  # total context of one server (per slot x parallel)
    threads: Threads = None
    threads_http: int | None = None
    batch_size: int | None = None
    ubatch_size: int | None = None
    extra_args: tuple[str, ...] = ()
    proxied: bool = True  # behind nginx; single-server tests talk to the server directly
    placement: Placement = "shared"
    gpus: tuple[int, ...] | None = None  # the GPUs the instances may use; None: every GPU
    model: Path | None = None  # None: the lab's model (LabConfig.model)
    # One alternative of each server-flag dimension (--server-dim), after extra_args.
    server_flags: tuple[str, ...] = ()

    @property
    def ctx_per_slot(self) -> int:
        return self.ctx_size // self.parallel


def computed_ctx_size(
    parallel: int,
    n_predict: int,
    ctx_per_slot: int | None = None,
    prompt_tokens: int = PROMPT_TOKEN_BUDGET,
) -> int:
    """Context of one server: each slot must hold prompt + n_predict or requests get truncated;
    `prompt_tokens` is the workload's longest prompt (with its template)."""
    per_slot = ctx_per_slot or _round_up(prompt_tokens + n_predict, CTX_ROUNDING)
    return per_slot * parallel


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


# HTTP threads beyond the in-flight requests: nginx's idle keep-alive connections (4 per
# instance, see nginx_config) and the lab's own health and metrics polls.
HTTP_THREAD_HEADROOM = 8


def default_threads_http(parallel: int, instances: int, max_concurrency: int) -> int:
    """llama-server's HTTP layer (cpp-httplib) ties a thread to a connection for as long as it
    is kept alive, so a connection with no free thread waits in the listen backlog until an
    idle one times out (5 s). Size the pool for every connection that can reach one instance:
    its share of the clients (at least its slots) plus the idle and control connections."""
    share = -(-max_concurrency // instances)
    return max(parallel, share) + HTTP_THREAD_HEADROOM


def effective_threads_http(layout: Layout) -> int:
    """The explicit value, else enough for this layout's slots plus the headroom."""
    if layout.threads_http is not None:
        return layout.threads_http
    return default_threads_http(layout.parallel, layout.instances, layout.parallel)


def server_args(layout: Layout) -> tuple[str, ...]:
    """The user's extra arguments, then the server-flag dimension's alternatives: later flags
    win in llama-server's parser, so a dimension overrides a fixed extra argument."""
    return layout.extra_args + layout.server_flags


def server_argv(
    server_bin: Path,
    model: Path,
    host: str,
    port: int,
    layout: Layout,
    api_key: str | None = None,
    threads: int | None = None,
) -> list[str]:
    """The llama-server command line as a list (never a shell string).

    `--parallel` is always passed: without it llama-server switches to a unified KV cache with
    different semantics. A `--ctx-size` / `--parallel` in the user's extra arguments wins.
    `threads` is this instance's resolved count (engine/processes/placement.py); without it an
    explicit count in the layout is used, else llama-server chooses.
    """
    if threads is None and isinstance(layout.threads, int):
        threads = layout.threads
    extra = server_args(layout)
    argv = [str(server_bin), "--model", str(layout.model or model)]
    argv += ["--host", host, "--port", str(port)]
    if not _has_flag(extra, PARALLEL_FLAGS):
        argv += ["--parallel", str(layout.parallel)]
    if not _has_flag(extra, CTX_FLAGS):
        argv += ["--ctx-size", str(layout.ctx_size)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    argv += ["--threads-http", str(effective_threads_http(layout))]
    if layout.batch_size is not None:
        argv += ["--batch-size", str(layout.batch_size)]
    if layout.ubatch_size is not None:
        argv += ["--ubatch-size", str(layout.ubatch_size)]
    argv += ["--metrics", "--slots", "--no-webui"]
    if api_key:
        argv += ["--api-key", api_key]
    argv += list(extra)
    return argv


@dataclass(frozen=True)
class LoadSettings:
    """Client-side knobs shared by every cell of a run."""

    n_predict: int = 64
    requests: int | None = None  # per cell; None = requests_per_client x concurrency
    requests_per_client: int = 2
    api: Api = "completion"
    stream: bool = False
    ignore_eos: bool = True
    cache_prompt: bool = False
    temperature: float = 0.0
    timeout_s: float = 600.0
    stall_timeout_s: float = 60.0
    warmup: bool = True
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    arrival: ArrivalProcess = "poisson"  # open loop: how a cell's `rate` is drawn
    burst: int = 1

    def requests_for(self, concurrency: int) -> int:
        return self.workload.requests(
            self.requests if self.requests is not None else self.requests_per_client * concurrency
        )

    @property
    def sent_api(self) -> Api:
        """The API requests go to: chat wherever the workload sends messages."""
        return "chat" if self.workload.chat else self.api


@dataclass(frozen=True)
class Cell:
    """One measured point of a run: a server layout, a balancing method and a client load."""

    layout: Layout
    balance: Balance
    concurrency: int
    n_predict: int
    requests: int
    workload: str = "fixed"
    rate: float | None = None  # open loop: arrivals per second; None: closed loop

    def params(self) -> dict[str, object]:
        """The cell's coordinates as result columns, stable across every run kind."""
        return {
            "instances": self.layout.instances,
            "parallel": self.layout.parallel,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "n_predict": self.n_predict,
            "requests": self.requests,
            "threads": self.layout.threads,
            "threads_http": effective_threads_http(self.layout),
            "batch_size": self.layout.batch_size,
            "ubatch_size": self.layout.ubatch_size,
            "ctx_size": self.layout.ctx_size,
            "balance": self.balance if self.layout.proxied else "direct",
            "placement": self.layout.placement,
            "gpus": None if self.layout.gpus is None else ",".join(map(str, self.layout.gpus)),
            "model": str(self.layout.model) if self.layout.model else None,
            "server_flags": shlex.join(self.layout.server_flags) or None,
            "workload": self.workload,
        }


@dataclass(frozen=True)
class LabConfig:
    """Where things are and how the cluster is reached; shared by runs, sweeps and the cluster."""

    server_bin: Path
    model: Path
    nginx_bin: Path | None
    host: str = DEFAULT_HOST
    base_port: int = DEFAULT_BASE_PORT
    nginx_port: int = DEFAULT_NGINX_PORT
    results_dir: Path = field(default_factory=lambda: Path("results"))
    api_key: str | None = None
    ready_timeout_s: float = 300.0
    # A server silent on /health this long in a cell is hung and killed (None: never)
    liveness_timeout_s: float | None = 10.0
    continue_on_error: bool = True
    upstream_keepalive: bool = False  # see nginx_config.ProxySpec for why it is off by default
    session_header: str = DEFAULT_SESSION_HEADER  # what `--balance session` keys on

    def with_ports(self, base_port: int, nginx_port: int) -> LabConfig:
        return replace(self, base_port=base_port, nginx_port=nginx_port)
