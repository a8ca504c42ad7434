"""The user's text, parsed once into typed values: what the plan builder and the lab take.

`parse` walks the registry in the form's order and raises the first problem as one line, so
`--parallel 1,,x` on the command line, in the form or in a preset gets the same message. A
setting the run does not read is not checked and holds its default; lists are tuples, and a
run that does not sweep a setting gets a tuple of one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from tui_lab.engine.errors import LabError
from tui_lab.engine.load.arrivals import ArrivalProcess
from tui_lab.engine.load.workloads import Length, Think, WorkloadKind
from tui_lab.engine.plan.config import Api, Balance, Placement, Threads
from tui_lab.engine.settings import registry
from tui_lab.engine.settings.registry import CLUSTER, COMMON, RUN_KINDS, Setting
from tui_lab.engine.settings.values import ServerDims

if TYPE_CHECKING:
    from tui_lab.engine.settings.run_settings import RunSettings


@dataclass(frozen=True)
class RunSpec:
    """Every setting's value, typed; `context` is the run kind (or the cluster) it was read for."""

    context: str
    kind: str
    instances: tuple[int, ...]
    parallel: tuple[int, ...]
    concurrency: tuple[int, ...]
    rate: tuple[float | None, ...]
    n_predict: tuple[int, ...]
    threads: tuple[Threads, ...]
    threads_http: tuple[int | None, ...]
    placement: tuple[Placement, ...]
    gpus: tuple[int, ...] | None
    batch_size: tuple[int | None, ...]
    ubatch_size: tuple[int | None, ...]
    balance: tuple[Balance, ...]
    plateau: float
    finalists: int
    max_p99_ms: float | None
    max_ttft_ms: float | None
    api: Api
    requests: int | None
    requests_per_client: int
    repeats: int
    request_timeout: float
    stall_timeout: float
    stream: bool
    allow_eos: bool
    cache_prompt: bool
    arrival: ArrivalProcess
    burst: int
    workload: WorkloadKind
    prompt_tokens: Length
    output_tokens: Length | None
    prefix_tokens: int
    prefix_groups: int
    sessions: int
    turns: int
    system_tokens: int
    think_time: Think
    workload_file: str
    seed: int
    session_header: str
    ctx_per_slot: int | None
    server_args: tuple[str, ...]
    server_dim: ServerDims
    ready_timeout: float
    liveness_timeout: float | None
    stop_on_error: bool
    upstream_keepalive: bool
    detach: bool
    model: tuple[str, ...]  # as typed, "" for the default model
    server_bin: str
    nginx_bin: str
    host: str
    base_port: int
    nginx_port: int
    results: str
    api_key: str


_SPEC_FIELDS = frozenset(f.name for f in fields(RunSpec))


def context_of(kind: str) -> str:
    """An unknown kind is reported by the kind's own check; the rest is read as a full sweep."""
    return kind if kind in RUN_KINDS or kind in (CLUSTER, COMMON) else "sweep-full"


def value_of(setting: Setting, text: str | bool, context: str) -> object:
    """One setting's value in this context; raises its one-line LabError."""
    parse = setting.parser(context)
    if parse is None or isinstance(text, bool):
        return text
    return parse(text, setting.option)


def parse(settings: RunSettings, context: str | None = None) -> RunSpec:
    """The typed spec of `settings` for a run of its kind (or `context`, e.g. the cluster)."""
    where = context_of(context or settings.kind)
    values: dict[str, object] = {"context": where}
    for setting in registry.settings():
        read = setting.reads(where)
        text = getattr(settings, setting.name) if read else setting.default
        value = value_of(setting, text, where if read else COMMON)
        if setting.name in _SPEC_FIELDS:
            values[setting.name] = value
    return RunSpec(**values)  # type: ignore[arg-type]


def field_error(settings: RunSettings, name: str) -> str | None:
    """The message for one field as typed, or None when it is valid (the form shows it)."""
    try:
        setting = registry.setting(name)
    except KeyError:
        return None
    where = context_of(settings.kind)
    if not setting.reads(where):
        return None
    try:
        value_of(setting, getattr(settings, name), where)
    except LabError as exc:
        return str(exc)
    return None
