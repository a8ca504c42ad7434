"""What a GGUF file's header says about a model's memory, read without loading the model.

The gguf package's GGUFReader builds a numpy view per array element (18 s for the default
model's 262,144-token vocabulary on a 2-core box); walking the header with struct takes a
fraction of a second. The package still supplies the format's constants.
"""

from __future__ import annotations

import functools
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf import (
    GGML_QUANT_SIZES,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)

from tui_lab.engine.errors import LabError

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
