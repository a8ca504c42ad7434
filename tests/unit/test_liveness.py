"""The liveness rule on hand-made probes, and the watch against a fake server frozen on demand."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fake_llama_server import FakeLlamaServer
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.processes.liveness import HealthTarget, Liveness, watch
from tui_lab.engine.settings.values import seconds_or_off


def test_a_server_that_never_answered_is_loading_not_hung() -> None:
    state = Liveness().probed(0.0, answered=False).probed(50.0, answered=False)
    assert not state.hung(1000.0, timeout_s=10)


def test_a_server_is_hung_once_its_last_answer_is_older_than_the_timeout() -> None:
    state = Liveness().probed(1.0, answered=True).probed(2.0, answered=False)
    assert not state.hung(11.0, timeout_s=10)
    assert state.hung(11.5, timeout_s=10)
    assert not state.probed(11.2, answered=True).hung(11.5, timeout_s=10)


def test_a_late_answer_counts_from_when_it_was_asked() -> None:
    """An answer to an older probe arriving after a newer one's must not age the server."""
    state = Liveness().probed(5.0, answered=True).probed(3.0, answered=True)
    assert state.last_answer == 5.0


@pytest.mark.parametrize(
    ("text", "value"), [("off", None), ("0", None), ("OFF", None), ("2.5", 2.5)]
)
def test_the_liveness_timeout_is_seconds_or_off(text: str, value: float | None) -> None:
    assert seconds_or_off(text, "liveness-timeout") == value


async def _hung_within(server: FakeLlamaServer, seconds: float, **kwargs: float) -> list[float]:
    """Watch the server for `seconds`; the times (since the watch began) it was declared hung."""
    declared: list[float] = []
    began = time.monotonic()
    async with control_session() as session:
        task = asyncio.create_task(
            watch(
                session,
                [HealthTarget(0, server.base_url)],
                0.6,
                lambda target, _: declared.append(time.monotonic() - began),
                every_s=0.1,
                probe_timeout_s=0.2,
                **kwargs,
            )
        )
        await asyncio.wait([task], timeout=seconds)
        task.cancel()
    return declared


async def test_a_frozen_server_is_declared_hung_once_within_the_timeout() -> None:
    async with FakeLlamaServer() as server:
        asyncio.get_running_loop().call_later(0.5, setattr, server, "frozen", True)
        declared = await _hung_within(server, 3.0)
        server.frozen = False
    # Frozen at 0.5 s: silent since the probe before, so hung after 0.6 s more, give or take
    # a probe; and said once, not every probe after.
    assert len(declared) == 1
    assert 0.9 < declared[0] < 1.8


async def test_a_loading_server_is_left_to_the_ready_timeout() -> None:
    async with FakeLlamaServer() as server:
        server.health = 503
        assert await _hung_within(server, 1.5) == []


async def test_a_server_ready_before_the_watch_that_never_answers_it_is_hung() -> None:
    async with FakeLlamaServer() as server:
        server.frozen = True
        declared = await _hung_within(server, 2.0, ready_since=time.monotonic())
        server.frozen = False
    assert len(declared) == 1 and declared[0] < 1.2
