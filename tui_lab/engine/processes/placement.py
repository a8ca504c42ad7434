"""Where each instance runs: its threads, its CPU cores and the GPUs it sees.

N llama-servers left to their own defaults each start one compute thread per physical core of
the whole machine, so on a CPU box N instances run N x cores threads on the cores and slow each
other several-fold (measured on a 2-core box: one instance 60-68 tok/s, two 4 tok/s together,
two with one thread each 73 tok/s). A sweep that compares 1 and 2 instances then measures that
starvation, not the layout. So:

- threads `auto` (the default) splits the physical cores the lab may use among the instances
  that run at once, at least one each; `N` is an explicit count; `default` leaves it to
  llama-server (one thread per physical core of the machine, whatever the instances).
- placement `pinned` gives each instance its own disjoint set of physical cores (with their
  SMT siblings) through the OS's CPU affinity, set in the child before it runs llama-server, so
  every thread of it (compute, HTTP, the backend's) stays on its cores. llama-server's own
  `--cpu-range`/`--cpu-strict` pin only its compute threads, and the affinity works on every
  build. Each instance gets the same number of cores; cores left over go unpinned to nginx, the
  load generator and the OS. Where the OS reports several NUMA nodes an instance's cores come
  from one node whenever the split allows, so its memory stays local.
- placement `spread` gives instance i GPU i mod G of the chosen GPUs (gpu_placement.py);
  `pinned+spread` does both; `shared` leaves every instance on every core and GPU.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from tui_lab.engine.errors import LabError
from tui_lab.engine.plan.config import Layout, Placement, Threads, pins_cpus, spreads_gpus
from tui_lab.engine.processes import gpu_placement

AFFINITY = hasattr(os, "sched_setaffinity")  # Linux (and some BSDs); not macOS

SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")


@dataclass(frozen=True)
class Core:
    """One physical core: the logical CPUs (SMT siblings) it runs and its NUMA node."""

    cpus: tuple[int, ...]
    node: int = 0


@dataclass(frozen=True)
class Topology:
    """The physical cores this process may run on, in node order then CPU order."""

    cores: tuple[Core, ...]

    @property
    def cpus(self) -> tuple[int, ...]:
        return tuple(cpu for core in self.cores for cpu in core.cpus)

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(sorted({core.node for core in self.cores}))


@functools.cache
def machine_topology() -> Topology:
    """Read once per process: cores do not come and go during a sweep."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return read_topology(SYS_CPU, SYS_NODE, allowed)


def read_topology(sys_cpu: Path, sys_node: Path, allowed: Sequence[int] | None = None) -> Topology:
    """Linux's sysfs view of cores and nodes, restricted to the CPUs this process may use
    (a container's cpuset, a `taskset`); elsewhere one core per physical core psutil counts."""
    cpus = allowed
    if cpus is None:
        cpus = list(range(psutil.cpu_count(logical=True) or 1))
    siblings = {
        cpu: _cpu_list(sys_cpu / f"cpu{cpu}" / "topology" / "thread_siblings_list") for cpu in cpus
    }
    if not all(siblings.values()):
        physical = psutil.cpu_count(logical=False) or len(cpus)
        per_core = max(1, len(cpus) // physical)
        groups = [tuple(cpus[i : i + per_core]) for i in range(0, len(cpus), per_core)]
        return Topology(tuple(Core(group) for group in groups))
    node_of = _nodes(sys_node)
    usable = set(cpus)
    cores: dict[tuple[int, ...], Core] = {}
    for cpu in cpus:
        group = tuple(c for c in siblings[cpu] if c in usable)
        cores.setdefault(group, Core(group, node_of.get(cpu, 0)))
    return Topology(tuple(sorted(cores.values(), key=lambda c: (c.node, c.cpus))))


def _cpu_list(path: Path) -> tuple[int, ...]:
    """Parse sysfs's `0-3,8-11`; empty when the file is missing."""
    try:
        text = path.read_text().strip()
    except OSError:
        return ()
    return parse_cpu_list(text)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    cpus: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return tuple(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The inverse of parse_cpu_list, as taskset and sysfs write it: `0-3,8`."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def _nodes(sys_node: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    for node_dir in sys_node.glob("node[0-9]*"):
        for cpu in _cpu_list(node_dir / "cpulist"):
            out[cpu] = int(node_dir.name.removeprefix("node"))
    return out


@dataclass(frozen=True)
class InstancePlacement:
    """What one instance gets; None means "not restricted": llama-server's default thread
    count, every core, every GPU."""

    threads: int | None
    cpus: tuple[int, ...] | None
    gpus: tuple[int, ...] | None


def split_cores(topology: Topology, instances: int) -> tuple[tuple[Core, ...], ...]:
    """Disjoint, equal shares of physical cores, an instance's share from one NUMA node
    whenever each node's cores divide into whole shares; otherwise shares cross nodes."""
    cores = topology.cores
    if instances > len(cores):
        raise LabError(
            f"--placement pinned: {instances} instances need {instances} physical cores, and "
            f"this machine lets the lab use {len(cores)} (CPUs {format_cpu_list(topology.cpus)})"
        )
    share = len(cores) // instances
    by_node = [tuple(c for c in cores if c.node == node) for node in topology.nodes]
    local = [
        group[i : i + share] for group in by_node for i in range(0, len(group) - share + 1, share)
    ]
    if len(local) >= instances:
        return tuple(local[:instances])
    return tuple(cores[i * share : (i + 1) * share] for i in range(instances))


def place(
    instances: int,
    threads: Threads,
    placement: Placement,
    gpus: tuple[int, ...] | None,
    topology: Topology | None = None,
) -> tuple[InstancePlacement, ...]:
    """Each instance's threads, cores and GPUs; raises LabError (nothing started) for an ask
    the machine cannot meet."""
    topology = topology or machine_topology()
    shares: Sequence[tuple[Core, ...] | None] = [None] * instances
    if pins_cpus(placement):
        if not AFFINITY:
            raise LabError(
                f"--placement {placement}: {sys.platform} has no CPU affinity for the lab to "
                "pin instances with; use shared or spread"
            )
        shares = split_cores(topology, instances)
    gpu_sets: Sequence[tuple[int, ...] | None] = [None] * instances
    if spreads_gpus(placement) or gpus is not None:
        # () from gpu_placement: no GPU to choose from, so nothing restricts the instance.
        gpu_sets = [
            g or None for g in gpu_placement.place(instances, gpus, spreads_gpus(placement))
        ]
    out = []
    for share, gpu_set in zip(shares, gpu_sets, strict=True):
        if threads == "auto":
            count: int | None = len(share) if share else max(1, len(topology.cores) // instances)
        else:
            count = threads
        cpus = tuple(cpu for core in share for cpu in core.cpus) if share else None
        out.append(InstancePlacement(count, cpus, gpu_set))
    return tuple(out)


def of_layout(layout: Layout) -> tuple[InstancePlacement, ...]:
    """`place` for a layout's own choices: what its cluster starts and its rows record."""
    return place(layout.instances, layout.threads, layout.placement, layout.gpus)


def describe(placements: Sequence[InstancePlacement]) -> dict[str, object]:
    """The row's record of what each instance got, `;` between instances; None for a column
    where no instance was restricted."""

    def joined(values: list[str | None], unrestricted: str) -> str | None:
        if all(v is None for v in values):
            return None
        return ";".join(unrestricted if v is None else v for v in values)

    return {
        "instance_threads": joined(
            [None if p.threads is None else str(p.threads) for p in placements], "default"
        ),
        "instance_cpus": joined(
            [format_cpu_list(p.cpus) if p.cpus else None for p in placements], "all"
        ),
        "instance_gpus": joined(
            [",".join(map(str, p.gpus)) if p.gpus is not None else None for p in placements],
            "all",
        ),
    }
