"""When each request arrives under open loop: a schedule drawn before the load starts.

Closed loop (C clients, each sending again the moment it has an answer) measures what the servers
can do flat out; real users arrive when they type, whatever the servers are doing. Open loop sends
at a rate (`--rate`) instead, so a cell shows what a given traffic does to latency and queues.
The schedule is pure and seeded with the workload's seed: every cell of a run, whatever its
layout or balancer, offers the same arrivals at the same offsets, and cells compare.

`burst` B sends B requests at the same instant, the groups at rate / B, so the mean request rate
stays the rate while the traffic comes in clumps (a chat front end that fans one action out into
several calls, many users at a meeting's end).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

ArrivalProcess = Literal["constant", "poisson"]
ARRIVAL_PROCESSES: tuple[ArrivalProcess, ...] = ("constant", "poisson")


@dataclass(frozen=True)
class Arrivals:
    rate: float  # arrivals per second (a request, or under multi-turn a conversation's start)
    process: ArrivalProcess = "poisson"
    burst: int = 1  # arrivals at the same instant; groups come at rate / burst
    seed: int = 0


@dataclass(frozen=True)
class Schedule:
    """Offsets in seconds from the first arrival (which is at 0), in order; `window_s` is the span
    the arrivals cover: where the next group would have arrived, so `len(times) / window_s` is the
    rate as drawn (exactly `rate` for constant arrivals in whole groups)."""

    times: tuple[float, ...]
    window_s: float

    @property
    def offered_rate(self) -> float:
        return len(self.times) / self.window_s


def schedule(arrivals: Arrivals, count: int) -> Schedule:
    """`count` arrivals: groups of `burst`, a group's gap 1/(rate/burst) (constant) or drawn
    exponential with that mean (Poisson), the first group at 0."""
    if arrivals.rate <= 0 or arrivals.burst < 1 or count < 1:
        raise ValueError(f"no schedule for {count} arrivals of {arrivals}")
    rng = random.Random(arrivals.seed)
    group_rate = arrivals.rate / arrivals.burst
    times: list[float] = []
    now = 0.0
    while len(times) < count:
        times += [now] * min(arrivals.burst, count - len(times))
        gap = 1 / group_rate if arrivals.process == "constant" else rng.expovariate(group_rate)
        now += gap
    return Schedule(tuple(times), now)
