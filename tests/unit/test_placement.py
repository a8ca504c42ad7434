"""Placement: threads per instance, disjoint cores (NUMA-aware), and what a row records.

The topologies are sysfs trees written into a temporary folder, in the kernel's own formats,
so the reader meets what a real machine hands it; the affinity is checked on a real child.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pynvml
import pytest

from tests.fake_gpus import FakeGpu, install
from tui_lab.engine.errors import LabError
from tui_lab.engine.processes import placement
from tui_lab.engine.processes.placement import (
    Core,
    InstancePlacement,
    Topology,
    describe,
    format_cpu_list,
    parse_cpu_list,
    place,
    read_topology,
    split_cores,
)
from tui_lab.engine.processes.process import ManagedProcess


def sysfs(root: Path, nodes: list[list[tuple[int, ...]]]) -> tuple[Path, Path]:
    """A /sys/devices/system tree: nodes of cores, each core its SMT siblings."""
    cpu_dir, node_dir = root / "cpu", root / "node"
    for number, cores in enumerate(nodes):
        cpus = [cpu for core in cores for cpu in core]
        (node_dir / f"node{number}").mkdir(parents=True)
        (node_dir / f"node{number}" / "cpulist").write_text(format_cpu_list(cpus) + "\n")
        for core in cores:
            for cpu in core:
                topo = cpu_dir / f"cpu{cpu}" / "topology"
                topo.mkdir(parents=True)
                (topo / "thread_siblings_list").write_text(",".join(map(str, core)) + "\n")
    return cpu_dir, node_dir


def two_nodes_smt(tmp_path: Path) -> Topology:
    """2 nodes x 4 cores x 2 threads; siblings numbered as Linux does on x86 (n, n + 8)."""
    nodes = [[(c, c + 8) for c in range(4)], [(c, c + 8) for c in range(4, 8)]]
    return read_topology(*sysfs(tmp_path, nodes), allowed=list(range(16)))


def test_cpu_lists_round_trip_in_the_kernels_format() -> None:
    assert parse_cpu_list("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert format_cpu_list([11, 0, 2, 1, 3, 8, 10]) == "0-3,8,10-11"
    assert format_cpu_list([5]) == "5"


def test_topology_groups_smt_siblings_into_cores_by_node(tmp_path: Path) -> None:
    topo = two_nodes_smt(tmp_path)
    assert len(topo.cores) == 8
    assert topo.cores[0] == Core((0, 8), node=0)
    assert topo.cores[4] == Core((4, 12), node=1)
    assert topo.nodes == (0, 1)


def test_topology_keeps_only_the_cpus_the_lab_may_use(tmp_path: Path) -> None:
    """A container's cpuset or a taskset: cores outside it are not the lab's to hand out."""
    cpu_dir, node_dir = sysfs(tmp_path, [[(c, c + 8) for c in range(8)]])
    topo = read_topology(cpu_dir, node_dir, allowed=[0, 1, 8])
    assert topo.cores == (Core((0, 8)), Core((1,)))


def test_pinned_instances_get_disjoint_equal_shares_within_one_node(tmp_path: Path) -> None:
    topo = two_nodes_smt(tmp_path)
    shares = split_cores(topo, 2)
    assert [{c.node for c in share} for share in shares] == [{0}, {1}]
    got = place(4, "auto", "pinned", None, topo)
    cpus = [set(p.cpus or ()) for p in got]
    assert all(a.isdisjoint(b) for i, a in enumerate(cpus) for b in cpus[i + 1 :])
    assert [p.threads for p in got] == [2, 2, 2, 2]  # physical cores, not SMT threads
    assert got[0].cpus == (0, 8, 1, 9)


def test_shares_cross_nodes_only_when_the_nodes_do_not_divide(tmp_path: Path) -> None:
    """8 cores in two nodes of 4 for 3 instances: shares of 2, two on node 0 and one on node 1,
    all local; a share crosses nodes only when the nodes cannot hold whole shares."""
    topo = two_nodes_smt(tmp_path)
    assert [{c.node for c in s} for s in split_cores(topo, 3)] == [{0}, {0}, {1}]
    uneven = Topology(tuple(Core((i,), node=0 if i < 3 else 1) for i in range(6)))
    shares = split_cores(uneven, 2)  # 3 cores each: node 0 holds one share, node 1 another
    assert [{c.node for c in s} for s in shares] == [{0}, {1}]
    odd = Topology(tuple(Core((i,), node=0 if i < 3 else 1) for i in range(4)))
    crossing = split_cores(odd, 2)  # shares of 2 from nodes of 3 and 1: one must cross
    assert [tuple(c.cpus[0] for c in s) for s in crossing] == [(0, 1), (2, 3)]
    assert {c.node for c in crossing[1]} == {0, 1}


def test_leftover_cores_stay_unpinned_for_nginx_and_the_load() -> None:
    topo = Topology(tuple(Core((i,)) for i in range(3)))
    got = place(2, "auto", "pinned", None, topo)
    assert [p.cpus for p in got] == [(0,), (1,)]


def test_pinning_more_instances_than_cores_is_one_line() -> None:
    topo = Topology((Core((0,)), Core((1,))))
    with pytest.raises(LabError) as caught:
        place(3, "auto", "pinned", None, topo)
    assert str(caught.value) == (
        "--placement pinned: 3 instances need 3 physical cores, and this machine lets the lab "
        "use 2 (CPUs 0-1)"
    )


def test_auto_threads_split_the_cores_among_shared_instances() -> None:
    topo = Topology(tuple(Core((i,)) for i in range(8)))
    assert [p.threads for p in place(3, "auto", "shared", None, topo)] == [2, 2, 2]
    assert [p.threads for p in place(16, "auto", "shared", None, topo)] == [1] * 16
    assert [p.threads for p in place(2, 3, "shared", None, topo)] == [3, 3]
    assert place(2, None, "shared", None, topo) == (InstancePlacement(None, None, None),) * 2


def test_pinning_needs_an_os_with_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "AFFINITY", False)
    with pytest.raises(LabError, match="no CPU affinity"):
        place(1, "auto", "pinned", None, Topology((Core((0,)),)))


def test_the_row_records_what_each_instance_got() -> None:
    got = (InstancePlacement(2, (0, 8, 1, 9), (0,)), InstancePlacement(2, (2, 10), (1,)))
    assert describe(got) == {
        "instance_threads": "2;2",
        "instance_cpus": "0-1,8-9;2,10",
        "instance_gpus": "0;1",
    }
    assert describe((InstancePlacement(None, None, None),)) == {
        "instance_threads": None,
        "instance_cpus": None,
        "instance_gpus": None,
    }


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
async def test_a_pinned_process_runs_only_on_its_cores(tmp_path: Path) -> None:
    """The affinity is set in the child before exec, so the program itself sees it."""
    cpu = min(os.sched_getaffinity(0))
    script = "import os; print(sorted(os.sched_getaffinity(0)))"
    child = ManagedProcess("probe", [sys.executable, "-c", script], tmp_path / "log", cpus=(cpu,))
    await child.start()
    assert await asyncio.wait_for(child.wait(), 30) == 0
    assert (tmp_path / "log").read_text().strip() == f"[{cpu}]"


@pytest.mark.usefixtures("fresh_probe")
@pytest.mark.parametrize("boards", [1, 2, 8])
def test_spread_and_pinning_together_give_each_instance_its_cores_and_its_gpu(
    monkeypatch: pytest.MonkeyPatch, boards: int
) -> None:
    install(monkeypatch, [FakeGpu(f"Card {i}") for i in range(boards)])
    topo = Topology(tuple(Core((i,)) for i in range(4)))
    got = place(4, "auto", "pinned+spread", None, topo)
    assert [p.gpus for p in got] == [(i % boards,) for i in range(4)]
    assert [p.cpus for p in got] == [(0,), (1,), (2,), (3,)]
    shared = place(2, "auto", "shared", (0,), topo)
    assert [p.gpus for p in shared] == [(0,), (0,)]  # --gpus 0: both see that GPU only
    row = describe(got)["instance_gpus"]
    assert row == ";".join(str(i % boards) for i in range(4))


@pytest.mark.usefixtures("fresh_probe")
def test_without_a_gpu_shared_asks_nothing_of_nvml_and_spread_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_driver() -> None:
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    topo = Topology((Core((0,)), Core((1,))))
    assert [p.gpus for p in place(2, "auto", "shared", None, topo)] == [None, None]
    with pytest.raises(LabError, match=r"^--placement spread: no NVIDIA GPU"):
        place(2, "auto", "spread", None, topo)
