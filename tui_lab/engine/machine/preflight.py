"""Memory pre-flight: will N llama-servers of a layout fit, asked before any of them starts.

Otherwise the answer comes late and badly: the OOM killer takes a server (or the box's desktop)
half-way through a sweep, or a GPU allocation fails after a minute of loading. The need is
estimated from the GGUF header:

    per instance = weights + KV cache + overhead
    weights      = the bytes of tensor data in the GGUF file
    KV cache     = ctx_size x sum over layers of n_head_kv x (key_length x bytes per K element
                                                              + value_length x bytes per V element)
                   ctx_size is one server's whole context (ctx per slot x parallel); the element
                   sizes are those of the cache types (-ctk / -ctv, f16 by default); key and value
                   lengths default to embedding_length / head_count, as in llama.cpp
    overhead     = 96 MiB + 10 % of weights + n_vocab x 4 B x parallel (the logits buffer)

and compared with what is free:

- GPU, when NVML sees NVIDIA GPUs and the servers offload (no `-ngl 0`, no `--device none`):
  each instance holds its own weights, total = N x need, and it must fit on every GPU on its own.
  llama.cpp splits an instance's layers over the GPUs it sees in proportion to their free memory
  (its default tensor split), so a GPU's need = the sum, over the instances that see it, of
  need x that GPU's free memory / the free memory of all the GPUs that instance sees. Every
  instance seeing every GPU gives the verdict of the sum; spread (one GPU per instance) can
  overflow one card while the sum still fits.
- RAM otherwise (psutil's "available"; on Apple Silicon the GPU's memory is this same RAM):
  llama-server maps the model file, so its instances share one copy of the weights in the page
  cache: total = weights + N x (KV cache + overhead); with mmap off, N x need.

What this does not know, so it errs on the large side:

- Sliding-window attention (Gemma 3 has `attention.sliding_window`): llama.cpp keeps only
  window + ubatch cells in the sliding layers, but which layers slide is not in the header, so
  every layer is counted at the full context: an upper bound. The default model at 8 x 4096
  tokens: 984 MB estimated, 568 MB measured (RSS).
- The overhead was measured on the default model only (Gemma 3 270M Q4_K_M, CPU build): RSS
  beyond weights + KV cache was 73-99 MB from 1 slot x 256 tokens to 8 x 4096, after requests
  (compute buffer 9-51 MiB, repacked weights 13 MiB, vocabulary, HTTP threads, runtime); the
  fixed 96 MiB + 10 % of weights gives 125 MB there. The 10 % is headroom for a larger model's
  compute buffers, which grow with its width; it was not measured on a GPU.
- A partial offload (`-ngl` below the layer count) is counted as if it were whole on the GPU.
- The split is by whole layers (and the output layer goes to the last GPU), so a GPU's real share
  is near, not exactly, its proportion; free memory is read once, before any server starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
from gguf import (
    GGML_QUANT_SIZES,
    GGMLQuantizationType,
)

from tui_lab.engine.errors import LabError
from tui_lab.engine.machine.gguf_header import ModelFacts, read_model
from tui_lab.engine.plan.config import (
    CTX_FLAGS,
    PARALLEL_FLAGS,
    Layout,
    flag_value,
    server_args,
    spreads_gpus,
)
from tui_lab.engine.processes import gpu_placement
from tui_lab.engine.processes.gpu_placement import InstanceGpus
from tui_lab.engine.telemetry.gpu_probe import APPLE_SILICON, GpuSample, shared_gpu_probe
from tui_lab.engine.units import human_bytes

MiB = 1024 * 1024
OVERHEAD_FIXED_BYTES = 96 * MiB
OVERHEAD_WEIGHTS_SHARE = 0.10
LOGIT_BYTES = 4  # one float32 logit per vocabulary entry per slot
DEFAULT_CACHE_TYPE = "f16"

CACHE_K_FLAGS = ("-ctk", "--cache-type-k")
CACHE_V_FLAGS = ("-ctv", "--cache-type-v")
GPU_LAYERS_FLAGS = ("-ngl", "--gpu-layers", "--n-gpu-layers")
DEVICE_FLAGS = ("-dev", "--device")
LOAD_MODE_FLAGS = ("-lm", "--load-mode")
MAPPED_LOAD_MODES = ("auto", "mmap", "mmap+mlock")  # the other modes read the weights in


def _element_bytes(cache_type: str, flag: str) -> float:
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[cache_type.upper()]]
    except KeyError:
        raise LabError(f"--server-args: {flag} {cache_type!r} is not a KV cache type") from None
    return size / block


@dataclass(frozen=True)
class ServerAsk:
    """What one layout asks of each llama-server, with the user's extra arguments applied."""

    instances: int
    parallel: int
    ctx_size: int
    cache_k: str
    cache_v: str
    offload: bool  # asks for GPU layers (llama-server offloads by default when it can)
    mapped: bool  # weights memory-mapped, so shared between instances in RAM

    @classmethod
    def of(cls, layout: Layout, model: ModelFacts) -> ServerAsk:
        args = server_args(layout)  # a server-flag dimension's -ctk q8_0 counts too
        parallel = _whole(flag_value(args, PARALLEL_FLAGS), layout.parallel, "--parallel")
        ctx = _whole(flag_value(args, CTX_FLAGS), layout.ctx_size, "--ctx-size")
        mode = (flag_value(args, LOAD_MODE_FLAGS) or "auto").lower()
        return cls(
            instances=layout.instances,
            parallel=max(parallel, 1),
            ctx_size=ctx or model.context_length or layout.ctx_size,  # 0: the model's own
            cache_k=flag_value(args, CACHE_K_FLAGS) or DEFAULT_CACHE_TYPE,
            cache_v=flag_value(args, CACHE_V_FLAGS) or DEFAULT_CACHE_TYPE,
            offload=flag_value(args, GPU_LAYERS_FLAGS) != "0"
            and (flag_value(args, DEVICE_FLAGS) or "").lower() != "none",
            mapped="--no-mmap" not in args and mode in MAPPED_LOAD_MODES,
        )


def _whole(text: str | None, default: int, flag: str) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise LabError(f"--server-args: {flag} {text!r} is not a whole number") from None


@dataclass(frozen=True)
class Estimate:
    instances: int
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    weights_shared: bool  # one copy in the page cache for all instances

    @property
    def per_instance(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def total(self) -> int:
        copies = 1 if self.weights_shared else self.instances
        return copies * self.weights_bytes + self.instances * (self.kv_bytes + self.overhead_bytes)


def estimate(model: ModelFacts, ask: ServerAsk, weights_shared: bool) -> Estimate:
    """The formula of the module docstring."""
    per_token = sum(model.kv_heads) * (
        model.key_length * _element_bytes(ask.cache_k, "--cache-type-k")
        + model.value_length * _element_bytes(ask.cache_v, "--cache-type-v")
    )
    overhead = (
        OVERHEAD_FIXED_BYTES
        + OVERHEAD_WEIGHTS_SHARE * model.weights_bytes
        + model.n_vocab * LOGIT_BYTES * ask.parallel
    )
    return Estimate(
        instances=ask.instances,
        weights_bytes=model.weights_bytes,
        kv_bytes=math.ceil(ask.ctx_size * per_token),
        overhead_bytes=math.ceil(overhead),
        weights_shared=weights_shared,
    )


@dataclass(frozen=True)
class Budget:
    free_bytes: int
    where: Literal["GPU", "RAM"]
    detail: str  # which figure it is, and why RAM when a GPU was asked for
    gpus: tuple[GpuSample, ...] = ()  # on a GPU budget, the GPUs whose free memory it adds up


def memory_budget(offload: bool) -> Budget:
    """Free GPU memory when the servers will offload to NVIDIA GPUs, else available RAM."""
    why_ram = "unified memory: the GPU uses this RAM" if APPLE_SILICON else ""
    if offload and not APPLE_SILICON:
        gpus, reason = shared_gpu_probe().devices()
        if gpus:
            return _gpu_budget(gpus)
        why_ram = reason or ""
    detail = "available RAM" + (f" ({why_ram})" if why_ram else "")
    return Budget(psutil.virtual_memory().available, "RAM", detail)


def _gpu_budget(gpus: Sequence[GpuSample]) -> Budget:
    names = ", ".join(f"GPU{g.index} {g.name}" for g in gpus)
    return Budget(sum(_free(g) for g in gpus), "GPU", f"free GPU memory ({names})", tuple(gpus))


def _free(gpu: GpuSample) -> int:
    return gpu.memory_total_bytes - gpu.memory_used_bytes


@dataclass(frozen=True)
class GpuNeed:
    """What a layout puts on one GPU, against that GPU's free memory."""

    gpu: GpuSample
    need_bytes: int
    instances: tuple[int, ...]  # the instances that see it, numbered from 0

    @property
    def free_bytes(self) -> int:
        return _free(self.gpu)

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.free_bytes

    @property
    def load(self) -> float:
        """Need over free: the GPU with the highest is the one that overflows first."""
        return self.need_bytes / self.free_bytes if self.free_bytes > 0 else math.inf

    @property
    def needs(self) -> str:
        return f"needs {human_bytes(self.need_bytes)} of {human_bytes(self.free_bytes)} free"

    def summary(self) -> str:
        return f"GPU{self.gpu.index} {self.needs}"


def _gpu_needs(
    per_instance: int, gpus: Sequence[GpuSample], instance_gpus: InstanceGpus
) -> tuple[GpuNeed, ...]:
    """Each used GPU's need: the sum, over the instances that see it, of the instance's need
    times the GPU's share of it.

    The share is llama.cpp's default tensor split: an instance's layers go to the GPUs it sees
    in proportion to their free memory (an equal split where none is free), read now, before
    any server of the layout has started. An instance that sees () was given no choice (NVML
    saw no GPU when it was placed) and, like its server, sees every GPU.
    """
    by_index = {g.index: g for g in gpus}
    need: dict[int, float] = {}
    seen_by: dict[int, list[int]] = {}
    for instance, seen in enumerate(instance_gpus):
        visible = seen or tuple(by_index)
        missing = [index for index in visible if index not in by_index]
        if missing:
            raise LabError(
                f"GPU {missing[0]} is not among the GPUs NVML reads now "
                f"({', '.join(f'GPU{index}' for index in by_index)})"
            )
        free_seen = sum(_free(by_index[index]) for index in visible)
        for index in visible:
            share = _free(by_index[index]) / free_seen if free_seen > 0 else 1 / len(visible)
            need[index] = need.get(index, 0.0) + per_instance * share
            seen_by.setdefault(index, []).append(instance)
    return tuple(
        GpuNeed(by_index[index], math.ceil(need[index]), tuple(seen_by[index]))
        for index in sorted(need)
    )


@dataclass(frozen=True)
class Preflight:
    model: ModelFacts
    ask: ServerAsk
    estimate: Estimate
    budget: Budget
    per_gpu: tuple[GpuNeed, ...] = ()  # on a GPU budget, every GPU an instance sees

    @property
    def fits(self) -> bool:
        """Overall, and on every GPU: free memory on one card does not help another."""
        return self.estimate.total <= self.budget.free_bytes and all(g.fits for g in self.per_gpu)

    def worst_gpu(self) -> GpuNeed | None:
        return max(self.per_gpu, key=lambda g: g.load, default=None)

    def summary(self) -> str:
        """One line: what is needed against what is free, and the tightest of several GPUs."""
        e = self.estimate
        shared = f"weights {human_bytes(e.weights_bytes)} once + " if e.weights_shared else ""
        each = e.kv_bytes + e.overhead_bytes if e.weights_shared else e.per_instance
        worst = self.worst_gpu()
        return (
            f"{e.instances} instance(s) need {human_bytes(e.total)} "
            f"({shared}{e.instances} x {human_bytes(each)}), "
            f"{human_bytes(self.budget.free_bytes)} {self.budget.detail}"
            + (f"; {worst.summary()}" if worst is not None and len(self.per_gpu) > 1 else "")
        )

    def report(self) -> list[str]:
        """The estimate line by line, for `llamalab preflight`."""
        m, a, e = self.model, self.ask, self.estimate
        window = (
            f"; sliding window {m.sliding_window} tokens, KV counted at full context (upper bound)"
            if m.sliding_window
            else ""
        )
        gpus = [
            f"{f'GPU{g.gpu.index}':<12} {g.needs} ({g.gpu.name}; "
            f"instance(s) {', '.join(map(str, g.instances))}){'' if g.fits else ': does NOT fit'}"
            for g in self.per_gpu
        ]
        return [
            f"model        {m.path} ({m.architecture}, {m.n_layer} layers, n_head_kv "
            f"{m.n_head_kv}, K/V head size {m.key_length}/{m.value_length}{window})",
            f"layout       {a.instances} instance(s) x {a.parallel} slot(s), ctx-size "
            f"{a.ctx_size} per instance, KV cache {a.cache_k}/{a.cache_v}",
            f"weights      {human_bytes(e.weights_bytes)}"
            + (" (memory-mapped: one copy shared by the instances)" if e.weights_shared else ""),
            f"KV cache     {human_bytes(e.kv_bytes)} per instance",
            f"overhead     {human_bytes(e.overhead_bytes)} per instance "
            f"({OVERHEAD_FIXED_BYTES // MiB} MiB + 10% of weights + logits buffer)",
            f"per instance {human_bytes(e.per_instance)}",
            f"total        {human_bytes(e.total)}",
            f"free         {human_bytes(self.budget.free_bytes)} {self.budget.detail}",
            *gpus,
            f"verdict      {'fits' if self.fits else 'does NOT fit'}",
        ]


def check(model_path: Path, layout: Layout, instance_gpus: InstanceGpus | None = None) -> Preflight:
    """Read the header, size the layout and compare it with free memory now (blocking: a few
    hundred milliseconds the first time a model is read, then cached). `instance_gpus`: which
    GPUs each instance sees (gpu_placement.place); None, every instance sees every GPU."""
    placed = None if instance_gpus is None else lambda _: instance_gpus
    return largest(model_path, (layout,), placed)


def largest(
    model_path: Path,
    layouts: Iterable[Layout],
    gpus_for: Callable[[int], InstanceGpus] | None = None,
) -> Preflight:
    """The pre-flight of the layout that fits worst: one that does not fit before one that
    does, then the one needing the most memory. Free memory is read once per place it is
    compared with (GPU or RAM), not once per layout. A layout's own model (a sweep over
    model files) wins over `model_path`, and its own placement says which GPUs each instance
    sees, unless `gpus_for(instances)` decides that for every layout."""
    budgets: dict[bool, Budget] = {}
    verdicts = []
    for layout in set(layouts):
        model = read_model(layout.model or model_path)
        ask = ServerAsk.of(layout, model)
        if ask.offload not in budgets:
            budgets[ask.offload] = memory_budget(ask.offload)
        budget = budgets[ask.offload]
        shared = budget.where == "RAM" and ask.mapped
        need = estimate(model, ask, shared)
        if budget.where == "RAM":
            verdicts.append(Preflight(model, ask, need, budget))
            continue
        placed = gpus_for(ask.instances) if gpus_for else layout_gpus(layout)
        if len(placed) != ask.instances:
            raise ValueError(f"{len(placed)} GPU placements for {ask.instances} instances")
        per_gpu = _gpu_needs(need.per_instance, budget.gpus, placed)
        used = _gpu_budget([g.gpu for g in per_gpu])  # free memory of the GPUs in use only
        verdicts.append(Preflight(model, ask, need, used, per_gpu))
    return max(verdicts, key=lambda v: (not v.fits, v.estimate.total))


def layout_gpus(layout: Layout) -> InstanceGpus:
    """Which GPUs each instance of the layout sees; () is every GPU (no NVML call needed)."""
    if layout.gpus is None and not spreads_gpus(layout.placement):
        return ((),) * layout.instances
    return gpu_placement.place(layout.instances, layout.gpus, spreads_gpus(layout.placement))


class DoesNotFit(LabError):
    """The pre-flight's verdict: the layout's servers would not fit in free memory."""


def require_fit(
    model_path: Path, layout: Layout, instance_gpus: InstanceGpus | None = None
) -> Preflight:
    verdict = check(model_path, layout, instance_gpus)
    if not verdict.fits:
        raise DoesNotFit(f"does not fit: {verdict.summary()}")
    return verdict
