"""A GGUF model's header alone, and the model rebuilt from it with zeros for weights.

The default model (253 MB) is too big to travel to a lent GPU machine; its header (metadata,
the 262k-token vocabulary, tensor infos) is a few MB gzipped. Rebuilt with zero-filled tensor
data of the original size and alignment, it loads like the original, takes the same memory and
costs the same compute: quantised matrix products and attention do not skip zeros, a Q4_K block
whose scales are 0 is valid (no NaN), and the lab's `ignore_eos` makes every request generate
exactly n_predict tokens. Only the text is garbage. README.md beside this says how that was
checked against the real model.

    python -m benchmarks.gpu_check.zero_model header MODEL.gguf HEADER.gguf.gz
    python -m benchmarks.gpu_check.zero_model rebuild HEADER.gguf.gz MODEL.gguf
"""

from __future__ import annotations

import argparse
import gzip
import mmap
import os
from pathlib import Path

from tui_lab.engine.machine.gguf_header import tensor_data_span


def write_header(model: Path, header: Path) -> None:
    """Gzip the bytes before the tensor data; refuse a file with bytes after the data, which
    a rebuild could not restore."""
    with model.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start, end = tensor_data_span(data)
        if end != len(data):
            raise SystemExit(
                f"{model}: tensor data ends at byte {end} (padded to the alignment), the file "
                f"has {len(data)}: a rebuild from the header would not have the original size"
            )
        head = data[:start]
    with gzip.GzipFile(header, "wb", compresslevel=9, mtime=0) as out:
        out.write(head)
    print(
        f"{header}: header {start:,} bytes of {end:,} ({start / end:.1%}), "
        f"gzipped {header.stat().st_size:,}"
    )


def rebuild(header: Path, model: Path) -> None:
    """Header, then zeros up to where the original's tensor data ended (a sparse file)."""
    head = gzip.decompress(header.read_bytes())
    start, end = tensor_data_span(head)
    if len(head) != start:
        raise SystemExit(f"{header}: {len(head):,} header bytes, the header says {start:,}")
    partial = model.with_name(model.name + ".partial")
    with partial.open("wb") as out:
        out.write(head)
        out.truncate(end)
    os.replace(partial, model)
    print(f"{model}: {end:,} bytes, header {start:,}, tensor data zero")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    h = sub.add_parser("header", help="write the gzipped header of MODEL")
    h.add_argument("model", type=Path)
    h.add_argument("header", type=Path)
    r = sub.add_parser("rebuild", help="write the zero model from a gzipped header")
    r.add_argument("header", type=Path)
    r.add_argument("model", type=Path)
    args = parser.parse_args()
    if args.action == "header":
        write_header(args.model, args.header)
    else:
        rebuild(args.header, args.model)


if __name__ == "__main__":
    main()
