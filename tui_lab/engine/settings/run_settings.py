"""What a user asks for, as typed, and the one place it is turned into a plan or rejected.

The CLI's flags, the TUI's form and preset files all fill a `RunSettings` with the user's own
text; spec.py parses it once into a `RunSpec`, and the functions here build the plan, the
lab's configuration and the standing cluster from that spec. Each also takes a `RunSettings`
(parsed first), so a face can hand over what the user typed and get the one-line `LabError`.
"""

from __future__ import annotations

import itertools
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from typing import Any, NoReturn

from tui_lab.engine.errors import LabError
from tui_lab.engine.load.workloads import FileRequest, WorkloadSettings, read_requests
from tui_lab.engine.machine.discovery import default_model_path, find_model, find_nginx, find_server
from tui_lab.engine.plan import passes, runs, search
from tui_lab.engine.plan.config import (
    PROMPT_TOKEN_BUDGET,
    LabConfig,
    Layout,
    LoadSettings,
    computed_ctx_size,
)
from tui_lab.engine.plan.runs import Plan, ServerOptions
from tui_lab.engine.processes import placement
from tui_lab.engine.processes.ports import check_port_layout
from tui_lab.engine.settings import registry
from tui_lab.engine.settings.registry import CLUSTER, COMMON, RUN_KINDS
from tui_lab.engine.settings.spec import RunSpec, field_error, parse
from tui_lab.engine.settings.values import ServerDims

__all__ = ["RUN_KINDS", "RunSettings", "RunSpec", "field_error", "parse"]

# A standing cluster serves outside clients whose prompts are unknown: size each slot for a
# prompt budget plus this many generated tokens unless the user sets --ctx-per-slot.
CLUSTER_N_PREDICT = 1024
Text = str | bool


class RunSettings:
    """Every knob as the user typed it (text, lists comma-separated, blank for the default; or a
    switch). Which knobs there are, and their defaults, is the registry's."""

    __slots__ = ("_values",)
    _values: dict[str, Text]

    def __init__(self, **values: Text) -> None:
        defaults = {s.name: s.default for s in registry.settings()}
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise TypeError(f"RunSettings: unknown setting {', '.join(unknown)}")
        object.__setattr__(self, "_values", {**defaults, **values})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"RunSettings has no setting {name!r}") from None

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise FrozenInstanceError(f"cannot assign to {name!r}: use with_values")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSettings) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self._values.items())
        return f"RunSettings({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (dict(self._values),))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> RunSettings:
        """Build from a preset or saved state; an unknown key or a wrong type names the source."""
        defaults = {s.name: s.default for s in registry.settings()}
        values: dict[str, Text] = {}
        for key, value in data.items():
            if key not in defaults:
                raise LabError(f"{source}: unknown setting {key!r}")
            want_bool = isinstance(defaults[key], bool)
            if want_bool and not isinstance(value, bool):
                raise LabError(f"{source}: {key} must be true or false")
            if not want_bool and not isinstance(value, str | int):
                raise LabError(f"{source}: {key} must be text or a number")
            values[key] = value if want_bool else str(value)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        return dict(self._values)

    def with_values(self, **changes: Text) -> RunSettings:
        return RunSettings(**{**self._values, **changes})


def _rebuild(values: dict[str, Text]) -> RunSettings:
    return RunSettings(**values)


def as_spec(settings: RunSettings | RunSpec, context: str | None = None) -> RunSpec:
    """A spec as given, or the settings parsed (for their own kind unless `context` says)."""
    return settings if isinstance(settings, RunSpec) else parse(settings, context)


def defaults_for(kind: str) -> RunSettings:
    """The defaults of one run kind: where it takes one value, the last of the default list,
    so `llamalab sweep threads` with no flags runs instead of refusing its own defaults."""
    return RunSettings(kind=kind).with_values(
        **{
            s.name: s.default.split(",")[-1]
            for s in registry.settings()
            if isinstance(s.default, str) and "," in s.default and kind not in s.lists_in
        }
    )


def _sweeps(spec: RunSpec, name: str) -> bool:
    return spec.context in registry.setting(name).lists_in


def server_flag_choices(dims: ServerDims) -> tuple[tuple[str, ...], ...]:
    """Every combination of one alternative per dimension, in the order given."""
    return tuple(tuple(arg for alt in combo for arg in alt) for combo in itertools.product(*dims))


def _models(spec: RunSpec) -> tuple[Path, ...]:
    """What find_model will resolve each entry to, without touching the disk's contents, so a
    plan can be built (and checked as typed) before the model is assembled or read."""
    return tuple(Path(e).expanduser().resolve() if e else default_model_path() for e in spec.model)


def search_settings(settings: RunSettings | RunSpec) -> search.SearchSettings:
    """The adaptive search's knobs; a TTFT bound needs streaming, the only way TTFT is seen."""
    spec = as_spec(settings, "sweep-adaptive")
    if spec.max_ttft_ms is not None and not spec.stream:
        raise LabError("--max-ttft-ms: TTFT is measured only with --stream")
    return search.SearchSettings(
        plateau=spec.plateau,
        finalists=spec.finalists,
        max_p99_ms=spec.max_p99_ms,
        max_ttft_ms=spec.max_ttft_ms,
        repeats=spec.repeats,
    )


def _server_options(spec: RunSpec, load: LoadSettings | None = None) -> ServerOptions:
    """`load`, when the run has clients: its workload's longest prompt sizes the slots."""
    sweeps_threads = _sweeps(spec, "threads")
    return ServerOptions(
        threads=None if sweeps_threads else spec.threads[0],
        threads_http=None if sweeps_threads else spec.threads_http[0],
        ctx_per_slot=spec.ctx_per_slot,
        extra_args=spec.server_args,
        placement="shared" if _sweeps(spec, "placement") else spec.placement[0],
        gpus=spec.gpus,
        model=_models(spec)[0],
        prompt_tokens=load.workload.prompt_budget(max(spec.n_predict))
        if load
        else PROMPT_TOKEN_BUDGET,
    )


def load_settings(settings: RunSettings | RunSpec) -> LoadSettings:
    spec = as_spec(settings)
    return LoadSettings(
        n_predict=spec.n_predict[0],
        requests=spec.requests,
        requests_per_client=spec.requests_per_client,
        api=spec.api,
        stream=spec.stream,
        ignore_eos=not spec.allow_eos,
        cache_prompt=spec.cache_prompt,
        timeout_s=spec.request_timeout,
        stall_timeout_s=spec.stall_timeout,
        workload=workload_settings(spec),
        arrival=spec.arrival,
        burst=spec.burst,
    )


def workload_settings(settings: RunSettings | RunSpec) -> WorkloadSettings:
    """The workload as typed; a file workload's file is read here, before anything starts."""
    spec = as_spec(settings)
    requests_file: tuple[FileRequest, ...] = ()
    if spec.workload == "file":
        if not spec.workload_file.strip():
            raise LabError("--workload-file: the file workload needs a JSONL file")
        requests_file = read_requests(spec.workload_file.strip())
    return WorkloadSettings(
        kind=spec.workload,
        prompt_tokens=spec.prompt_tokens,
        output_tokens=spec.output_tokens,
        prefix_tokens=spec.prefix_tokens,
        prefix_groups=spec.prefix_groups,
        sessions=spec.sessions,
        turns=spec.turns,
        system_tokens=spec.system_tokens,
        think=spec.think_time,
        requests_file=requests_file,
        seed=spec.seed,
        session_header=spec.session_header,
    )


def build_plan(settings: RunSettings | RunSpec) -> Plan:
    """The cells this run will measure; raises `LabError` before anything starts."""
    spec = as_spec(settings)
    if spec.context != spec.kind:
        raise ValueError(f"a spec read for {spec.context} cannot plan a {spec.kind} run")
    load = load_settings(spec)
    opts = _server_options(spec, load)
    if spec.kind == "test-single":
        plan = runs.single(load, opts)
    elif spec.kind == "test-concurrent":
        plan = runs.concurrent(spec.parallel[0], spec.concurrency[0], load, opts, spec.rate[0])
    elif spec.kind == "test-round-robin":
        plan = runs.round_robin(
            spec.instances[0],
            spec.parallel[0],
            spec.concurrency[0],
            spec.balance[0],
            load,
            opts,
            spec.rate[0],
        )
    elif spec.kind == "sweep-threads":
        plan = runs.threads_sweep(
            spec.threads,
            spec.threads_http,
            spec.parallel[0],
            spec.concurrency[0],
            load,
            opts,
            spec.rate[0],
        )
    elif spec.kind == "sweep-round-robin":
        plan = runs.round_robin_sweep(
            spec.instances[0],
            spec.parallel[0],
            spec.n_predict,
            spec.concurrency,
            spec.balance[0],
            load,
            opts,
            spec.rate,
        )
    else:
        plan = runs.full_sweep(
            spec.instances,
            spec.parallel,
            spec.concurrency,
            load,
            opts,
            batch_sizes=spec.batch_size,
            ubatch_sizes=spec.ubatch_size,
            balances=spec.balance,
            placements=spec.placement,
            models=_models(spec),
            server_flags=server_flag_choices(spec.server_dim),
            rates=spec.rate,
        )
        if spec.kind == "sweep-adaptive":
            plan = runs.adaptive_sweep(search_settings(spec), plan)
    plan = replace(plan, repeats=spec.repeats)
    _check_ctx(plan)
    _check_placements(plan)
    check_port_layout(
        spec.base_port,
        spec.nginx_port,
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


def estimate(plan: Plan) -> str:
    """What the user is about to start, in one line: cells, server starts, requests."""
    if plan.search is not None:
        return (
            f"searches {len(plan.cells)} cells of {len(search.lanes(plan.cells))} layouts: "
            f"short probes, then full cells for the {plan.search.finalists} best"
        )
    starts = passes.server_starts(plan.cells, plan.repeats)
    if plan.repeats > 1:
        cells = f"{len(plan.cells)} cells x {plan.repeats} repeats, {starts} server starts"
    else:
        cells = f"{len(plan.cells)} cells, {starts} server layouts"
    return f"{cells}, {plan.requests} measured requests"


def cluster_layout(settings: RunSettings | RunSpec, n_predict: int = CLUSTER_N_PREDICT) -> Layout:
    """The standing cluster's servers: one instance count and slot count, no client load
    (the pre-flight sizes the same layout for a given n_predict)."""
    spec = as_spec(settings, CLUSTER)
    opts = _server_options(spec)
    parallel = spec.parallel[0]
    layout = Layout(
        instances=spec.instances[0],
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


def lab_config(settings: RunSettings | RunSpec, *, need_nginx: bool) -> LabConfig:
    """Validate the addresses first, then find the real parts on disk."""
    spec = as_spec(settings, COMMON)
    models = [find_model(entry or None) for entry in spec.model]
    return LabConfig(
        server_bin=find_server(spec.server_bin or None),
        model=models[0],
        nginx_bin=find_nginx(spec.nginx_bin or None) if need_nginx else None,
        host=spec.host,
        base_port=spec.base_port,
        nginx_port=spec.nginx_port,
        results_dir=Path(spec.results or "results"),
        api_key=spec.api_key or None,
        ready_timeout_s=spec.ready_timeout,
        liveness_timeout_s=spec.liveness_timeout,
        continue_on_error=not spec.stop_on_error,
        upstream_keepalive=spec.upstream_keepalive,
        session_header=spec.session_header,
    )


def cluster_args(settings: RunSettings) -> list[str]:
    """The flags that make the detached supervisor build the same cluster (blank ones omitted):
    every setting `cluster start` takes, as typed."""
    args: list[str] = []
    for s in registry.settings():
        value = getattr(settings, s.name)
        if "cluster" not in s.commands or value in ("", False):
            continue
        args += [f"--{s.option}"] if value is True else [f"--{s.option}", str(value)]
    return args
