"""What a user asks for, as typed, and the one place it is turned into a plan or rejected.

The CLI's flags, the TUI's form and preset files all fill a `RunSettings` with the user's own
text; `build_plan`, `lab_config` and `field_error` check it. So `--parallel 1,,x` on the command
line, in the form or in a preset gets the same one-line message.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tui_lab.engine.errors import LabError
from tui_lab.engine.machine.discovery import default_model_path, find_model, find_nginx, find_server
from tui_lab.engine.plan import runs, search
from tui_lab.engine.plan.config import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    DEFAULT_NGINX_PORT,
    LabConfig,
    Layout,
    LoadSettings,
    Placement,
    Threads,
    check_extra_args,
    check_host,
    check_port,
    computed_ctx_size,
    parse_balances,
    parse_gpus,
    parse_int_list,
    parse_placements,
    parse_positive_ints,
    parse_threads,
)
from tui_lab.engine.plan.runs import Plan, ServerOptions
from tui_lab.engine.processes import placement
from tui_lab.engine.processes.ports import check_port_layout

RUN_KINDS: dict[str, str] = {
    "test-single": "Single request: one server, one slot, one client",
    "test-concurrent": "Concurrent: one server with P slots under C clients",
    "test-round-robin": "Round robin: N servers behind nginx",
    "sweep-threads": "Threads sweep: --threads x --threads-http on one server",
    "sweep-round-robin": "Round-robin sweep: n_predict x concurrency through nginx",
    "sweep-full": "Full sweep: instances x parallel x concurrency (x batch x ubatch x balance)",
    "sweep-adaptive": "Adaptive sweep: the full sweep's cells, searched for the best quickly",
}
# A standing cluster serves outside clients whose prompts are unknown: size each slot for a
# prompt budget plus this many generated tokens unless the user sets --ctx-per-slot.
CLUSTER_N_PREDICT = 1024


@dataclass(frozen=True)
class RunSettings:
    """Every knob as the user typed it; lists are comma-separated text, blank means default."""

    kind: str = "sweep-full"
    instances: str = "1,2"
    parallel: str = "1,4"
    concurrency: str = "1,8"
    n_predict: str = "64"
    threads: str = "auto"  # see engine/placement.py: the cores split among the instances
    threads_http: str = "default"
    batch_size: str = "default"
    ubatch_size: str = "default"
    balance: str = "round_robin"
    placement: str = "shared"
    gpus: str = "all"
    # Server-flag dimensions: `;` between dimensions, `|` between one's alternatives.
    server_dim: str = ""
    requests: str = ""
    requests_per_client: str = "2"
    api: str = "completion"
    stream: bool = False
    allow_eos: bool = False
    cache_prompt: bool = False
    request_timeout: str = "600"
    ctx_per_slot: str = ""
    server_args: str = ""
    server_bin: str = ""
    model: str = ""  # blank: the default model; several, `|` between them (full sweeps)
    nginx_bin: str = ""
    host: str = DEFAULT_HOST
    base_port: str = str(DEFAULT_BASE_PORT)
    nginx_port: str = str(DEFAULT_NGINX_PORT)
    api_key: str = ""
    ready_timeout: str = "300"
    results: str = "results"
    stop_on_error: bool = False
    upstream_keepalive: bool = False
    detach: bool = False  # run on without the terminal; see engine/detached.py
    # The adaptive sweep's own knobs (engine/search.py); blank bounds mean none.
    plateau: str = str(round(search.DEFAULT_PLATEAU * 100))
    finalists: str = str(search.DEFAULT_FINALISTS)
    max_p99_ms: str = ""
    max_ttft_ms: str = ""

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> RunSettings:
        """Build from a preset or saved state; an unknown key or a wrong type names the source."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise LabError(f"{source}: unknown setting {key!r}")
            want_bool = isinstance(getattr(cls(), key), bool)
            if want_bool and not isinstance(value, bool):
                raise LabError(f"{source}: {key} must be true or false")
            if not want_bool and not isinstance(value, str | int):
                raise LabError(f"{source}: {key} must be text or a number")
            values[key] = value if want_bool else str(value)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_values(self, **changes: Any) -> RunSettings:
        return replace(self, **changes)


def _int(text: str, name: str, minimum: int = 1) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise LabError(f"--{name}: {text.strip()!r} is not a whole number") from None
    if value < minimum:
        raise LabError(f"--{name}: {value} is below {minimum}")
    return value


def _optional_int(text: str, name: str, minimum: int = 1) -> int | None:
    return None if text.strip() in ("", "default") else _int(text, name, minimum)


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabError(f"--{name}: {text!r} is not a number") from None
    if value <= 0:
        raise LabError(f"--{name}: must be above 0")
    return value


def one_value(text: str, name: str) -> int:
    values = parse_positive_ints(text, name)
    if len(values) != 1:
        raise LabError(f"--{name}: this run takes one value, not a list")
    return values[0]


def _port(text: str, name: str) -> int:
    return check_port(_int(text, name, minimum=0), name)


def check_api_key(text: str) -> str:
    if text and not text.replace("-", "").replace("_", "").isalnum():
        raise LabError("--api-key: use letters, digits, '-' and '_' only")
    return text


def _server_args(text: str, option: str = "server-args") -> tuple[str, ...]:
    try:
        return check_extra_args(tuple(shlex.split(text)))
    except ValueError as exc:
        raise LabError(f"--{option}: {exc}") from None


def _kind(text: str) -> str:
    if text not in RUN_KINDS:
        raise LabError(f"unknown run {text!r}; runs: {', '.join(RUN_KINDS)}")
    return text


_COMMON = {"n_predict", "threads", "threads_http", "placement", "gpus"}
# The fields each run kind reads; the others are ignored (and not checked) for that kind.
RELEVANT: dict[str, set[str]] = {
    "test-single": _COMMON,
    "test-concurrent": _COMMON | {"parallel", "concurrency"},
    "test-round-robin": _COMMON | {"instances", "parallel", "concurrency", "balance"},
    "sweep-threads": _COMMON | {"parallel", "concurrency"},
    "sweep-round-robin": _COMMON | {"instances", "parallel", "concurrency", "balance"},
    "sweep-full": _COMMON
    | {
        "instances",
        "parallel",
        "concurrency",
        "batch_size",
        "ubatch_size",
        "balance",
        "server_dim",
    },
}
SEARCH_FIELDS = {"plateau", "finalists", "max_p99_ms", "max_ttft_ms"}
RELEVANT["sweep-adaptive"] = RELEVANT["sweep-full"] | SEARCH_FIELDS


def _takes_lists(kind: str) -> set[str]:
    """Which list fields this run kind sweeps; the others must hold one value."""
    return {
        "sweep-threads": {"threads", "threads_http"},
        "sweep-round-robin": {"n_predict", "concurrency"},
        "sweep-full": {
            "instances",
            "parallel",
            "concurrency",
            "batch_size",
            "ubatch_size",
            "balance",
            "placement",
            "model",
        },
    }.get("sweep-full" if kind == "sweep-adaptive" else kind, set())


def defaults_for(kind: str) -> RunSettings:
    """The defaults of one run kind: where it takes one value, the last of the default list,
    so `llamalab sweep threads` with no flags runs instead of refusing its own defaults."""
    base = RunSettings(kind=kind)
    lists = _takes_lists(kind)
    return base.with_values(
        **{
            name: getattr(base, name).split(",")[-1]
            for name in ("instances", "parallel", "concurrency")
            if name not in lists
        }
    )


def _list_check(kind: str, name: str) -> Callable[[str], object]:
    option = name.replace("_", "-")
    lists = name in _takes_lists(kind)
    if name == "threads":
        return parse_threads if lists else single_threads
    if name == "placement":
        return parse_placements if lists else single_placement
    if name == "gpus":
        return parse_gpus
    if name == "server_dim":
        return parse_server_dims
    if name in ("threads_http", "batch_size", "ubatch_size"):
        if name in _takes_lists(kind):
            return lambda t: parse_int_list(t, option, allow_default=True)
        return lambda t: _optional_int(t, option)
    if name == "balance":
        if name in _takes_lists(kind):
            return parse_balances
        return lambda t: single_balance(t)
    if name in _takes_lists(kind):
        return lambda t: parse_positive_ints(t, option)
    return lambda t: one_value(t, option)


def single_threads(text: str) -> Threads:
    values = parse_threads(text)
    if len(values) != 1:
        raise LabError("--threads: this run takes one value, not a list")
    return values[0]


def single_placement(text: str) -> Placement:
    values = parse_placements(text)
    if len(values) != 1:
        raise LabError("--placement: this run takes one value, not a list")
    return values[0]


def parse_server_dims(text: str) -> tuple[tuple[tuple[str, ...], ...], ...]:
    """`-fa on|-fa off; -ctk f16|-ctk q8_0` into dimensions of alternatives, each a list of
    arguments; an empty alternative means "no flag" (`|-fa on` compares the default with it)."""
    dims = []
    for dim in text.split(";"):
        if not dim.strip():
            continue
        alternatives = tuple(_server_args(alt, "server-dim") for alt in dim.split("|"))
        if len(set(alternatives)) != len(alternatives):
            raise LabError(f"--server-dim: {dim.strip()!r} repeats an alternative")
        dims.append(alternatives)
    return tuple(dims)


def server_flag_choices(text: str) -> tuple[tuple[str, ...], ...]:
    """Every combination of one alternative per dimension, in the order given."""
    return tuple(
        tuple(arg for alt in combo for arg in alt)
        for combo in itertools.product(*parse_server_dims(text))
    )


def model_entries(text: str) -> tuple[str, ...]:
    """The models as typed, `|` between them; blank is the default model."""
    entries = tuple(entry.strip() for entry in text.split("|")) if text.strip() else ("",)
    if len(entries) > 1 and not all(entries):
        raise LabError(f"--model: empty entry in {text!r}; give paths like a.gguf|b.gguf")
    if len(set(entries)) != len(entries):
        raise LabError(f"--model: {text!r} repeats a model")
    return entries


def _model_path(entry: str) -> Path:
    """What find_model will resolve the entry to, without touching the disk's contents, so a
    plan can be built (and checked as typed) before the model is assembled or read."""
    return Path(entry).expanduser().resolve() if entry else default_model_path()


def _models(s: RunSettings, kind: str) -> tuple[Path, ...]:
    entries = model_entries(s.model)
    if len(entries) > 1 and "model" not in _takes_lists(kind):
        raise LabError("--model: this run takes one model, not a list")
    return tuple(_model_path(e) for e in entries)


def single_balance(text: str) -> str:
    values = parse_balances(text)
    if len(values) != 1:
        raise LabError("--balance: this run takes one value, not a list")
    return values[0]


def _optional_number(text: str, name: str) -> float | None:
    return None if not text.strip() else _number(text.strip(), name)


def _plateau(text: str) -> float:
    value = _number(text.strip(), "plateau")
    if value >= 100:
        raise LabError("--plateau: a percentage below 100")
    return value / 100


_SEARCH_CHECKS: dict[str, Callable[[str], object]] = {
    "plateau": _plateau,
    "finalists": lambda t: _int(t, "finalists"),
    "max_p99_ms": lambda t: _optional_number(t, "max-p99-ms"),
    "max_ttft_ms": lambda t: _optional_number(t, "max-ttft-ms"),
}


def search_settings(s: RunSettings) -> search.SearchSettings:
    """The adaptive search's knobs; a TTFT bound needs streaming, the only way TTFT is seen."""
    max_ttft_ms = _optional_number(s.max_ttft_ms, "max-ttft-ms")
    if max_ttft_ms is not None and not s.stream:
        raise LabError("--max-ttft-ms: TTFT is measured only with --stream")
    return search.SearchSettings(
        plateau=_plateau(s.plateau),
        finalists=_int(s.finalists, "finalists"),
        max_p99_ms=_optional_number(s.max_p99_ms, "max-p99-ms"),
        max_ttft_ms=max_ttft_ms,
    )


def _checks(settings: RunSettings) -> dict[str, Callable[[str], object]]:
    kind = settings.kind if settings.kind in RUN_KINDS else "sweep-full"
    checks: dict[str, Callable[[str], object]] = {
        name: _SEARCH_CHECKS.get(name) or _list_check(kind, name) for name in sorted(RELEVANT[kind])
    }
    checks.update(
        kind=_kind,
        requests=lambda t: _optional_int(t, "requests"),
        requests_per_client=lambda t: _int(t, "requests-per-client"),
        request_timeout=lambda t: _number(t, "request-timeout"),
        ready_timeout=lambda t: _number(t, "ready-timeout"),
        ctx_per_slot=lambda t: _optional_int(t, "ctx-per-slot", minimum=16),
        server_args=_server_args,
        host=check_host,
        base_port=lambda t: _port(t, "base-port"),
        nginx_port=lambda t: _port(t, "nginx-port"),
        api_key=check_api_key,
        api=lambda t: t if t in ("completion", "chat") else _bad_api(t),
        model=lambda t: _models(settings.with_values(model=t), kind),
    )
    return checks


def _bad_api(text: str) -> str:
    raise LabError(f"--api: {text!r} is not completion or chat")


def field_error(settings: RunSettings, name: str) -> str | None:
    """The message for one field as typed, or None when it is valid (the form shows it)."""
    check = _checks(settings).get(name)
    if check is None:
        return None
    try:
        check(getattr(settings, name))
    except LabError as exc:
        return str(exc)
    return None


def validate(settings: RunSettings) -> None:
    """Every field, in form order; the first problem is raised."""
    for name, check in _checks(settings).items():
        check(getattr(settings, name))


def _server_options(s: RunSettings, kind: str) -> ServerOptions:
    sweeps_threads = kind == "sweep-threads"
    lists = _takes_lists(kind)
    return ServerOptions(
        threads=None if sweeps_threads else single_threads(s.threads),
        threads_http=None if sweeps_threads else _optional_int(s.threads_http, "threads-http"),
        ctx_per_slot=_optional_int(s.ctx_per_slot, "ctx-per-slot", minimum=16),
        extra_args=_server_args(s.server_args),
        placement="shared" if "placement" in lists else single_placement(s.placement),
        gpus=parse_gpus(s.gpus),
        model=_models(s, kind)[0],
    )


def load_settings(s: RunSettings) -> LoadSettings:
    n_predicts = parse_positive_ints(s.n_predict, "n-predict")
    return LoadSettings(
        n_predict=n_predicts[0],
        requests=_optional_int(s.requests, "requests"),
        requests_per_client=_int(s.requests_per_client, "requests-per-client"),
        api=s.api,  # type: ignore[arg-type]
        stream=s.stream,
        ignore_eos=not s.allow_eos,
        cache_prompt=s.cache_prompt,
        timeout_s=_number(s.request_timeout, "request-timeout"),
    )


def build_plan(s: RunSettings) -> Plan:
    """The cells this run will measure; raises `LabError` before anything starts."""
    validate(s)
    load = load_settings(s)
    opts = _server_options(s, s.kind)
    if s.kind == "test-single":
        plan = runs.single(load, opts)
    elif s.kind == "test-concurrent":
        plan = runs.concurrent(
            one_value(s.parallel, "parallel"), one_value(s.concurrency, "concurrency"), load, opts
        )
    elif s.kind == "test-round-robin":
        plan = runs.round_robin(
            one_value(s.instances, "instances"),
            one_value(s.parallel, "parallel"),
            one_value(s.concurrency, "concurrency"),
            single_balance(s.balance),  # type: ignore[arg-type]
            load,
            opts,
        )
    elif s.kind == "sweep-threads":
        plan = runs.threads_sweep(
            parse_threads(s.threads),
            parse_int_list(s.threads_http, "threads-http", allow_default=True),
            one_value(s.parallel, "parallel"),
            one_value(s.concurrency, "concurrency"),
            load,
            opts,
        )
    elif s.kind == "sweep-round-robin":
        plan = runs.round_robin_sweep(
            one_value(s.instances, "instances"),
            one_value(s.parallel, "parallel"),
            parse_positive_ints(s.n_predict, "n-predict"),
            parse_positive_ints(s.concurrency, "concurrency"),
            single_balance(s.balance),  # type: ignore[arg-type]
            load,
            opts,
        )
    else:
        plan = runs.full_sweep(
            parse_positive_ints(s.instances, "instances"),
            parse_positive_ints(s.parallel, "parallel"),
            parse_positive_ints(s.concurrency, "concurrency"),
            load,
            opts,
            batch_sizes=parse_int_list(s.batch_size, "batch-size", allow_default=True),
            ubatch_sizes=parse_int_list(s.ubatch_size, "ubatch-size", allow_default=True),
            balances=parse_balances(s.balance),
            placements=parse_placements(s.placement),
            models=_models(s, s.kind),
            server_flags=server_flag_choices(s.server_dim),
        )
        if s.kind == "sweep-adaptive":
            plan = runs.adaptive_sweep(search_settings(s), plan)
    _check_ctx(plan)
    _check_placements(plan)
    check_port_layout(
        _port(s.base_port, "base-port"),
        _port(s.nginx_port, "nginx-port"),
        max(c.layout.instances for c in plan.cells),
        proxied=any(c.layout.proxied for c in plan.cells),
    )
    return plan


def _check_placements(plan: Plan) -> None:
    """Every layout's placement is possible on this machine (cores to pin, GPUs to spread
    over), so a sweep never stops at its fifth layout for something known now."""
    for layout in {cell.layout for cell in plan.cells}:
        placement.of_layout(layout)


def _check_ctx(plan: Plan) -> None:
    """A slot that cannot hold prompt + n_predict truncates every request: refuse up front."""
    for cell in plan.cells:
        if cell.layout.ctx_per_slot < cell.n_predict + 16:
            raise LabError(
                f"--ctx-per-slot {cell.layout.ctx_per_slot} cannot hold n_predict {cell.n_predict} "
                "plus a prompt"
            )


def cluster_layout(s: RunSettings, n_predict: int = CLUSTER_N_PREDICT) -> Layout:
    """The standing cluster's servers: one instance count and slot count, no client load
    (the pre-flight sizes the same layout for a given n_predict)."""
    for name in (
        "instances",
        "parallel",
        "host",
        "base_port",
        "nginx_port",
        "server_args",
        "api_key",
        "threads",
        "placement",
        "gpus",
        "model",
    ):
        _checks(s.with_values(kind="test-round-robin"))[name](getattr(s, name))
    opts = _server_options(s, "test-round-robin")
    parallel = one_value(s.parallel, "parallel")
    layout = Layout(
        instances=one_value(s.instances, "instances"),
        parallel=parallel,
        ctx_size=computed_ctx_size(parallel, n_predict, opts.ctx_per_slot),
        threads=opts.threads,
        threads_http=opts.threads_http,
        extra_args=opts.extra_args,
        proxied=True,
        placement=opts.placement,
        gpus=opts.gpus,
        model=opts.model,
    )
    placement.of_layout(layout)
    return layout


def lab_config(s: RunSettings, *, need_nginx: bool) -> LabConfig:
    """Validate the addresses first, then find the real parts on disk."""
    host = check_host(s.host)
    base_port = _port(s.base_port, "base-port")
    nginx_port = _port(s.nginx_port, "nginx-port")
    ready = _number(s.ready_timeout, "ready-timeout")
    api_key = check_api_key(s.api_key) or None
    models = [find_model(entry or None) for entry in model_entries(s.model)]
    return LabConfig(
        server_bin=find_server(s.server_bin or None),
        model=models[0],
        nginx_bin=find_nginx(s.nginx_bin or None) if need_nginx else None,
        host=host,
        base_port=base_port,
        nginx_port=nginx_port,
        results_dir=Path(s.results or "results"),
        api_key=api_key,
        ready_timeout_s=ready,
        continue_on_error=not s.stop_on_error,
        upstream_keepalive=s.upstream_keepalive,
    )


def estimate(plan: Plan) -> str:
    """What the user is about to start, in one line: cells, server starts, requests."""
    if plan.search is not None:
        return (
            f"searches {len(plan.cells)} cells of {len(search.lanes(plan.cells))} layouts: "
            f"short probes, then full cells for the {plan.search.finalists} best"
        )
    starts = sum(
        1 for i, c in enumerate(plan.cells) if i == 0 or c.layout != plan.cells[i - 1].layout
    )
    return f"{len(plan.cells)} cells, {starts} server layouts, {plan.requests} measured requests"


# Settings a standing cluster is started with, as `llamalab cluster serve` flags.
_CLUSTER_FLAGS = (
    "instances",
    "parallel",
    "balance",
    "server_bin",
    "model",
    "nginx_bin",
    "host",
    "base_port",
    "nginx_port",
    "threads",
    "threads_http",
    "placement",
    "gpus",
    "ctx_per_slot",
    "server_args",
    "api_key",
    "ready_timeout",
)


def cluster_args(s: RunSettings) -> list[str]:
    """The flags that make the detached supervisor build the same cluster (blank ones omitted)."""
    args: list[str] = []
    for name in _CLUSTER_FLAGS:
        value = getattr(s, name)
        if value != "":
            args += [f"--{name.replace('_', '-')}", str(value)]
    if s.upstream_keepalive:
        args.append("--upstream-keepalive")
    return args
