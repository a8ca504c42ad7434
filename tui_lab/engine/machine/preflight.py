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

import functools
import math
import mmap
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
from gguf import (
    GGML_QUANT_SIZES,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)

from tui_lab.engine.errors import LabError
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

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
    GGUFValueType.BOOL: "?",
}
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
# Numeric arrays up to this length are decoded (per-layer head counts); longer ones (scores of
# a vocabulary) are only counted.
_DECODED_ARRAY_MAX = 4096


@dataclass(frozen=True)
class _Array:
    count: int
    values: tuple[int | float | bool, ...] | None  # None: not decoded


class _Cursor:
    """Reads GGUF's little- or big-endian fields from a mapped file, front to back.

    The gguf package's GGUFReader builds a numpy view per array element: 18 s on this 2-core box
    for the default model, whose 262,144-token vocabulary is three such arrays. The header is all
    the pre-flight needs, and walking it with struct takes a fraction of a second; the package
    still supplies the format's constants (value types, quantisation block sizes, key names).
    """

    def __init__(self, data: bytes | mmap.mmap, order: str) -> None:
        self.data = data
        self.order = order
        self.pos = 0

    def take(self, code: str, count: int = 1) -> tuple[int | float | bool, ...]:
        fmt = f"{self.order}{count}{code}"
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def uint(self, code: str) -> int:
        return int(self.take(code)[0])

    def string(self) -> str:
        size = self.uint("Q")
        end = self.pos + size
        if end > len(self.data):
            raise ValueError("string runs past the end of the file")
        text = self.data[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end
        return text

    def value(self, kind: GGUFValueType) -> object:
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            return self.array()
        return self.take(_SCALAR_FORMATS[kind])[0]

    def array(self) -> _Array:
        item = GGUFValueType(self.uint("I"))
        count = self.uint("Q")
        code = _SCALAR_FORMATS.get(item)
        if code is not None and count <= _DECODED_ARRAY_MAX:
            return _Array(count, self.take(code, count))
        if code is not None:
            self.pos += count * struct.calcsize(code)
        elif item == GGUFValueType.STRING:
            for _ in range(count):
                self.pos += 8 + struct.unpack_from(f"{self.order}Q", self.data, self.pos)[0]
        else:
            for _ in range(count):
                self.value(item)
        if self.pos > len(self.data):
            raise ValueError("array runs past the end of the file")
        return _Array(count, None)


@dataclass(frozen=True)
class _Header:
    meta: dict[str, object]
    weights: int  # bytes of tensor data, summed over the tensors
    data_start: int  # where the tensor data begins: the header is every byte before it
    data_end: int  # where the last tensor's data ends
    alignment: int  # of every tensor's offset


def _read_header(data: bytes | mmap.mmap) -> _Header:
    """Walk the metadata and the tensor infos; `data` may stop at the end of the header."""
    if struct.unpack_from("<I", data, 0)[0] != GGUF_MAGIC:
        raise ValueError("bad magic bytes")
    order = "<"
    version = struct.unpack_from("<I", data, 4)[0]
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        order = ">"
        version = struct.unpack_from(">I", data, 4)[0]
    if version not in _SUPPORTED_VERSIONS:
        raise ValueError(f"GGUF version {version} is not supported")
    cursor = _Cursor(data, order)
    cursor.pos = 8
    tensor_count, kv_count = cursor.take("Q", 2)
    meta: dict[str, object] = {}
    for _ in range(int(kv_count)):
        key = cursor.string()
        meta[key] = cursor.value(GGUFValueType(cursor.uint("I")))
    weights = 0
    data_end = 0
    for _ in range(int(tensor_count)):
        cursor.string()  # name
        dims = cursor.take("Q", cursor.uint("I"))
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(cursor.uint("I"))]
        offset = cursor.uint("Q")
        size = math.prod(int(d) for d in dims) * type_size // block
        weights += size
        data_end = max(data_end, offset + size)
    aligned_to = meta.get(Keys.General.ALIGNMENT, _DEFAULT_ALIGNMENT)
    alignment = int(aligned_to)  # type: ignore[call-overload]
    start = _align(cursor.pos, alignment)
    return _Header(meta, weights, start, start + data_end, alignment)


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def tensor_data_span(data: bytes | mmap.mmap) -> tuple[int, int]:
    """Where a GGUF file's tensor data starts, and where it ends padded to the alignment (as
    GGUF writers leave it), from the header alone: the file's size, for a file of no more."""
    header = _read_header(data)
    return header.data_start, _align(header.data_end, header.alignment)


@dataclass(frozen=True)
class ModelFacts:
    """What the header says about a model's memory: its weights and the shape of its KV cache."""

    path: Path
    architecture: str
    n_layer: int
    kv_heads: tuple[int, ...]  # per layer (most models: the same n_head_kv in every layer)
    key_length: int
    value_length: int
    n_vocab: int
    context_length: int | None
    sliding_window: int | None
    weights_bytes: int

    @property
    def n_head_kv(self) -> int:
        return max(self.kv_heads)


def read_model(path: Path) -> ModelFacts:
    """The header's facts, cached per file version (a sweep asks once per layout)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise LabError(f"model not readable: {path} ({exc.strerror})") from None
    return _read_model(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_model(path: Path, _mtime_ns: int, _size: int) -> ModelFacts:
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            header = _read_header(data)
            if header.data_end > len(data):
                raise ValueError(
                    f"tensor data ends at byte {header.data_end}, the file has {len(data)}"
                )
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise LabError(f"model is not a readable GGUF file: {path} ({exc})") from None
    return _facts(path, header.meta, header.weights)


def _facts(path: Path, meta: dict[str, object], weights: int) -> ModelFacts:
    arch = meta.get(Keys.General.ARCHITECTURE)
    if not isinstance(arch, str):
        raise LabError(f"model header has no {Keys.General.ARCHITECTURE}: {path}")

    def number(key: str, required: bool = True) -> int | None:
        name = key.format(arch=arch)
        value = meta.get(name)
        if isinstance(value, _Array) and value.values:  # per layer: the largest, to be safe
            value = max(value.values)
        if isinstance(value, int | float) and value > 0:
            return int(value)
        if required:
            raise LabError(f"model header has no usable {name}: {path}")
        return None

    n_layer = number(Keys.LLM.BLOCK_COUNT)
    n_head = number(Keys.Attention.HEAD_COUNT)
    assert n_layer is not None and n_head is not None
    embedding = number(Keys.LLM.EMBEDDING_LENGTH, required=False)
    head_size = embedding // n_head if embedding else None
    key_length = number(Keys.Attention.KEY_LENGTH, required=False) or head_size
    value_length = number(Keys.Attention.VALUE_LENGTH, required=False) or head_size
    if key_length is None or value_length is None:
        raise LabError(f"model header gives no attention head size: {path}")
    tokens = meta.get(Keys.Tokenizer.LIST)
    n_vocab = tokens.count if isinstance(tokens, _Array) else None
    return ModelFacts(
        path=path,
        architecture=arch,
        n_layer=n_layer,
        kv_heads=_kv_heads(
            meta.get(Keys.Attention.HEAD_COUNT_KV.format(arch=arch)), n_head, n_layer
        ),
        key_length=key_length,
        value_length=value_length,
        n_vocab=n_vocab or number(Keys.LLM.VOCAB_SIZE, required=False) or 0,
        context_length=number(Keys.LLM.CONTEXT_LENGTH, required=False),
        sliding_window=number(Keys.Attention.SLIDING_WINDOW, required=False),
        weights_bytes=weights,
    )


def _kv_heads(value: object, n_head: int, n_layer: int) -> tuple[int, ...]:
    """Per layer; absent means as many as query heads (no grouped-query attention)."""
    if isinstance(value, _Array) and value.values and len(value.values) == n_layer:
        return tuple(int(v) for v in value.values)
    if isinstance(value, _Array) and value.values:
        return (int(max(value.values)),) * n_layer
    if isinstance(value, int) and value > 0:
        return (value,) * n_layer
    return (n_head,) * n_layer


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
