"""The GPU check's answer: at equal total slots, do more instances beat more slots?

Reads the sweep's results and nvidia-smi's per-process samples and prints three tables: every
cell (tok/s, energy per token, failures); each pair of layouts with the same total of slots
(instances x parallel) at the same concurrency, the one with more instances first, with the
ratio of their tok/s; and each layout's GPU memory per instance.

GPU memory comes from run.sh's rounds of `nvidia-smi --query-compute-apps`, independent of the
lab: every layout starts servers of its own, so each set of llama-server pids seen together in a
round is one layout's, taken in the order the sweep ran them.

    python -m benchmarks.gpu_check.summary RESULTS.jsonl [GPU_PROCESSES.csv]
"""

from __future__ import annotations

import argparse
import csv
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import print_table, ratio
from tui_lab.engine.results.reader import read_rows


@dataclass(frozen=True)
class Layout:
    instances: int
    parallel: int

    @property
    def slots(self) -> int:
        return self.instances * self.parallel

    def __str__(self) -> str:
        return f"{self.instances}x{self.parallel}"


@dataclass(frozen=True)
class Cell:
    layout: Layout
    concurrency: int
    tok_per_s: float | None  # None: the cell failed
    joules_per_token: float | None
    energy_reason: str | None
    requests_failed: int
    error: str | None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def read_cells(results: Path) -> list[Cell]:
    cells = []
    for row in read_rows(results):
        tok = _number(row.get("output_tok_per_s"))
        cells.append(
            Cell(
                layout=Layout(int(str(row["instances"])), int(str(row["parallel"]))),
                concurrency=int(str(row["concurrency"])),
                tok_per_s=tok if tok else None,
                joules_per_token=_number(row.get("joules_per_token")),
                energy_reason=str(row["energy_reason"]) if row.get("energy_reason") else None,
                requests_failed=int(_number(row.get("requests_failed")) or 0),
                error=str(row["error"]) if row.get("error") else None,
            )
        )
    return cells


@dataclass(frozen=True)
class Pair:
    """Two layouts with the same slots at one concurrency; `more` has more instances."""

    more: Cell
    fewer: Cell

    @property
    def more_wins(self) -> bool | None:
        a, b = self.more.tok_per_s, self.fewer.tok_per_s
        return None if a is None or b is None else a > b


def equal_slot_pairs(cells: Sequence[Cell]) -> list[Pair]:
    pairs = []
    for a, b in itertools.combinations(cells, 2):
        same = a.layout.slots == b.layout.slots and a.concurrency == b.concurrency
        if same and a.layout.instances != b.layout.instances:
            more, fewer = sorted((a, b), key=lambda c: -c.layout.instances)
            pairs.append(Pair(more, fewer))
    return sorted(pairs, key=lambda p: (p.more.layout.slots, p.more.concurrency))


@dataclass(frozen=True)
class Sample:
    """One process in one round of run.sh's sampler: a `# <epoch seconds>` line, then
    `nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits`."""

    round: int
    pid: int
    name: str
    used_mib: int


def read_samples(path: Path) -> list[Sample]:
    samples = []
    round_ = 0
    with path.open(newline="") as fh:
        for record in csv.reader(fh, skipinitialspace=True):
            if record and record[0].startswith("#"):
                round_ += 1
            elif len(record) == 3 and record[0].isdigit() and record[2].isdigit():
                samples.append(Sample(round_, int(record[0]), record[1], int(record[2])))
    return samples


def memory_by_layout(
    samples: Iterable[Sample], layouts: Sequence[Layout]
) -> dict[Layout, list[int]]:
    """Each layout's peak MiB per instance: the k-th set of `instances` server pids seen
    together, sharing none with the set before it, belongs to the k-th layout."""
    snapshots: dict[int, dict[int, int]] = {}
    for s in samples:
        if "llama-server" in s.name:
            snapshots.setdefault(s.round, {})[s.pid] = s.used_mib
    sets: dict[frozenset[int], dict[int, int]] = {}  # in the order first seen
    for snapshot in snapshots.values():
        peak = sets.setdefault(frozenset(snapshot), {})
        for pid, mib in snapshot.items():
            peak[pid] = max(peak.get(pid, 0), mib)
    found: dict[Layout, list[int]] = {}
    pending = iter(layouts)
    layout = next(pending, None)
    previous: frozenset[int] = frozenset()
    for pids, peak in sets.items():
        if layout is not None and len(pids) == layout.instances and not pids & previous:
            found[layout] = sorted(peak.values())
            previous = pids
            layout = next(pending, None)
    return found


def _memory_row(layout: Layout, mib: Sequence[int]) -> list[str]:
    if not mib:
        return [str(layout), "0", "-", "-"]
    return [str(layout), str(len(mib)), f"{max(mib):,}", f"{sum(mib):,}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the sweep's .jsonl (or .csv)")
    parser.add_argument("processes", type=Path, nargs="?", help="nvidia-smi per-process samples")
    args = parser.parse_args()
    cells = read_cells(args.results)
    print_table(
        "Every cell: output tok/s and energy per token",
        ["layout", "slots", "clients", "tok/s", "mJ/token", "failed", "note"],
        [
            [
                str(c.layout),
                str(c.layout.slots),
                str(c.concurrency),
                f"{c.tok_per_s:,.0f}" if c.tok_per_s else "-",
                f"{1000 * c.joules_per_token:.2f}" if c.joules_per_token is not None else "-",
                str(c.requests_failed),
                c.error or c.energy_reason or "",
            ]
            for c in cells
        ],
    )
    pairs = equal_slot_pairs(cells)
    verdicts = [p.more_wins for p in pairs if p.more_wins is not None]
    print_table(
        "Equal total slots, same clients: more instances against more slots",
        ["slots", "clients", "more instances", "tok/s", "more slots", "tok/s", "ratio"],
        [
            [
                str(p.more.layout.slots),
                str(p.more.concurrency),
                str(p.more.layout),
                f"{p.more.tok_per_s:,.0f}" if p.more.tok_per_s else "-",
                str(p.fewer.layout),
                f"{p.fewer.tok_per_s:,.0f}" if p.fewer.tok_per_s else "-",
                ratio(p.more.tok_per_s, p.fewer.tok_per_s),
            ]
            for p in pairs
        ],
        [
            f"more instances faster in {sum(verdicts)} of {len(verdicts)} measured pairs "
            "(ratio > 1: the layout with more instances gave more tok/s); one run each"
        ],
    )
    if args.processes is None or not args.processes.is_file():
        print("\nGPU memory: no per-process samples (nvidia-smi --query-compute-apps)")
        return
    layouts = list(dict.fromkeys(c.layout for c in cells if c.tok_per_s))
    memory = memory_by_layout(read_samples(args.processes), layouts)
    print_table(
        "GPU memory per instance (peak of nvidia-smi's per-process samples, MiB)",
        ["layout", "instances seen", "per instance", "all instances"],
        [_memory_row(lay, memory.get(lay, [])) for lay in layouts],
        ["'instances seen' below the layout's instances: some were not sampled (see the csv)"],
    )


if __name__ == "__main__":
    main()
