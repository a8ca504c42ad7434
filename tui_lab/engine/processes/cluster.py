"""N llama-server instances, optionally behind one nginx: the unit a run measures.

A cluster is started whole or not at all: if any instance fails to become ready, everything
already started is stopped before the error reaches the user.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import EventSink
from tui_lab.engine.plan.config import Balance, LabConfig, Layout, server_argv
from tui_lab.engine.processes.gpu_placement import cuda_env
from tui_lab.engine.processes.instance import ServerInstance, connect_host
from tui_lab.engine.processes.nginx_config import SWEEP_FAILOVER, Failover, ProxySpec
from tui_lab.engine.processes.placement import InstancePlacement, of_layout
from tui_lab.engine.processes.ports import check_port_layout, ensure_free
from tui_lab.engine.processes.proxy import NginxProxy


@dataclass(frozen=True)
class ClusterSpec:
    layout: Layout
    balance: Balance
    max_concurrency: int  # sizes nginx's worker_connections
    failover: Failover = SWEEP_FAILOVER  # nginx's timeouts and retry rules


def required_ports(lab: LabConfig, instances: int, proxied: bool) -> list[tuple[int, str]]:
    check_port_layout(lab.base_port, lab.nginx_port, instances, proxied=proxied)
    ports = [(lab.base_port + i, f"llama-server #{i}") for i in range(instances)]
    if proxied:
        ports.append((lab.nginx_port, "nginx"))
    return ports


class Cluster:
    def __init__(self, lab: LabConfig, spec: ClusterSpec, run_dir: Path, emit: EventSink) -> None:
        if spec.layout.proxied and lab.nginx_bin is None:
            raise LabError("nginx not found: install it (Debian: apt-get install nginx)")
        self.lab = lab
        self.spec = spec
        self.run_dir = run_dir
        self.emit = emit
        layout = spec.layout
        self.placements = of_layout(layout)
        self.instances = [
            ServerInstance(
                i,
                lab.host,
                lab.base_port + i,
                server_argv(
                    lab.server_bin,
                    lab.model,
                    lab.host,
                    lab.base_port + i,
                    layout,
                    lab.api_key,
                    threads=where.threads,
                ),
                run_dir / f"llama-server-{i}.log",
                emit,
                cpus=where.cpus,
                env=_gpu_env(where),
            )
            for i, where in enumerate(self.placements)
        ]
        self.proxy: NginxProxy | None = None
        if spec.layout.proxied:
            self.proxy = self._make_proxy(spec.balance)

    def _make_proxy(self, balance: Balance) -> NginxProxy:
        assert self.lab.nginx_bin is not None
        upstream_host = connect_host(self.lab.host)
        proxy_spec = ProxySpec(
            listen_host=self.lab.host,
            listen_port=self.lab.nginx_port,
            upstreams=tuple((upstream_host, inst.port) for inst in self.instances),
            run_dir=self.run_dir,
            balance=balance,
            max_concurrency=self.spec.max_concurrency,
            failover=self.spec.failover,
            api_key=self.lab.api_key,
            upstream_keepalive=self.lab.upstream_keepalive,
            session_header=self.lab.session_header,
        )
        return NginxProxy(self.lab.nginx_bin, proxy_spec, self.emit)

    @property
    def gpus_in_use(self) -> frozenset[int] | None:
        """The GPUs the instances see, whose energy a cell counts; None: every GPU."""
        if any(where.gpus is None for where in self.placements):
            return None
        return frozenset(gpu for where in self.placements for gpu in where.gpus or ())

    @property
    def url(self) -> str:
        """Where clients send requests: nginx, or the single server of an unproxied layout."""
        return self.proxy.url if self.proxy else self.instances[0].url

    async def start(self, session: aiohttp.ClientSession) -> None:
        ensure_free(
            self.lab.host, required_ports(self.lab, len(self.instances), self.proxy is not None)
        )
        try:
            for inst in self.instances:
                await inst.start()
            await asyncio.gather(
                *(inst.wait_ready(session, self.lab.ready_timeout_s) for inst in self.instances)
            )
            if self.proxy:
                await self.proxy.start(session)
        except BaseException:
            await self.stop()
            raise

    async def restart_instance(
        self, index: int, session: aiohttp.ClientSession, *, grace_s: float = 10.0
    ) -> None:
        """Stop and start one server in place; nginx keeps routing to its port. `grace_s` 0
        kills at once (a hung server would not act on SIGTERM; SIGSTOPped, it cannot)."""
        old = self.instances[index]
        await old.stop(grace_s)
        fresh = ServerInstance(
            index,
            self.lab.host,
            old.port,
            old.process.argv,
            old.process.log_path,
            self.emit,
            cpus=self.placements[index].cpus,
            env=_gpu_env(self.placements[index]),
        )
        self.instances[index] = fresh
        await fresh.start()
        await fresh.wait_ready(session, self.lab.ready_timeout_s)

    async def replace_dead(self, session: aiohttp.ClientSession) -> bool:
        """Restart in place each server that died or was killed as hung, then nginx, whose
        count of failures would keep a restarted server out of its rotation for a while (its
        fail_timeout); False when every process still runs. One model load per dead server,
        not one per server."""
        dead = [inst.index for inst in self.instances if not inst.process.running]
        if not dead and (self.proxy is None or self.proxy.process.running):
            return False
        for index in dead:
            await self.restart_instance(index, session)
        if self.proxy is not None:
            await self.proxy.stop()
            self.proxy = self._make_proxy(self.proxy.spec.balance)
            await self.proxy.start(session)
        return True

    async def set_balance(self, balance: Balance, session: aiohttp.ClientSession) -> None:
        """Only nginx restarts when the balancing method is the one thing that changed."""
        if self.proxy is None or self.proxy.spec.balance == balance:
            return
        await self.proxy.stop()
        self.proxy = self._make_proxy(balance)
        await self.proxy.start(session)

    async def stop(self) -> None:
        """Stop nginx first so no request is routed to a server that is going away."""
        if self.proxy:
            await self.proxy.stop()
        await asyncio.gather(*(inst.stop() for inst in self.instances))


def _gpu_env(where: InstancePlacement) -> dict[str, str] | None:
    """The GPUs one instance sees, as its CUDA environment; None: every GPU."""
    return cuda_env(where.gpus) if where.gpus is not None else None
