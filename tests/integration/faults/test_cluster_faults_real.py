"""The standing cluster's faults against the real binaries: one of two instances frozen
(SIGSTOP) or killed (SIGKILL). The supervisor takes it out of nginx's rotation, so the
requests sent afterwards all succeed, and replaces it; `cluster status` says what happened."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig

pytestmark = pytest.mark.integration

LIVENESS_S = 3  # the rule is the same at the default 10 s; the test just waits less


def status() -> dict[str, Any]:
    out = llamalab("cluster", "status", "--json")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def wait_for_step(index: int, what: str, timeout: float) -> dict[str, Any]:
    """The cluster's state once its history records `what` for instance `index`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = status()
        if any(h["index"] == index and h["what"] == what for h in state.get("history", ())):
            return state
        time.sleep(0.5)
    raise AssertionError(f"no {what!r} for server {index} in {timeout} s: {status()}")


def client(endpoint: str) -> openai.OpenAI:
    # No client-side retries: a request nginx loses must show here, not be sent again.
    return openai.OpenAI(base_url=f"{endpoint}/v1", api_key="none", max_retries=0, timeout=60)


def chat(endpoint: str) -> int:
    reply = client(endpoint).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
    )
    assert reply.usage is not None
    return reply.usage.completion_tokens


def stream_in_background(endpoint: str, outcomes: list[tuple[str, float]]) -> threading.Thread:
    """A long stream, so it is in flight when the fault comes; records how and when it ended."""

    def run() -> None:
        try:
            stream = client(endpoint).chat.completions.create(
                model="any",
                messages=[{"role": "user", "content": "Count to a thousand"}],
                max_tokens=400,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            for _ in stream:
                pass
            outcomes.append(("ok", time.monotonic()))
        except openai.APIError:
            outcomes.append(("failed", time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(
    ("sig", "fault"), [(signal.SIGSTOP, "hung"), (signal.SIGKILL, "died")], ids=["frozen", "killed"]
)
def test_one_of_two_instances_faulty_is_replaced_and_new_requests_all_succeed(
    lab: LabConfig, sig: signal.Signals, fault: str
) -> None:
    started = llamalab(
        "cluster", "start", "--instances", "2", "--parallel", "1", "--threads", "1",
        "--liveness-timeout", str(LIVENESS_S), *ports(lab),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    endpoint = f"http://127.0.0.1:{lab.nginx_port}"
    victim = status()["instances"][1]["pid"]
    try:
        # One stream per instance (round robin, one slot each), both under way at the fault.
        outcomes: list[tuple[str, float]] = []
        streams = [stream_in_background(endpoint, outcomes) for _ in range(2)]
        time.sleep(2)
        os.kill(victim, sig)
        struck = time.monotonic()

        wait_for_step(1, "out of rotation", timeout=LIVENESS_S + 30)
        assert all(chat(endpoint) > 0 for _ in range(20))  # every one: none reaches server 1

        for stream in streams:
            stream.join(timeout=120)
        # The healthy instance's stream completes; the one on the faulty instance is all that
        # is lost, and it fails once that instance is killed, not after nginx's read timeout.
        assert sorted(how for how, _ in outcomes) == ["failed", "ok"]
        assert all(at - struck < LIVENESS_S + 15 for how, at in outcomes if how == "failed")

        healed = wait_for_step(1, "back in rotation", timeout=180)
        assert [i["state"] for i in healed["instances"]] == ["ready", "ready"]
        assert healed["instances"][1]["pid"] != victim
        assert gone(victim)
        shown = llamalab("cluster", "status").stdout
        assert f"server 1 {fault}: pid {victim}" in shown, shown
        assert f"server 1 restarted: pid {victim} replaced by" in shown, shown
        assert "server 1 back in rotation" in shown, shown
        assert chat(endpoint) > 0 and chat(endpoint) > 0  # both instances serve again
        frozen_at_stop = healed["instances"][0]["pid"]
        os.kill(frozen_at_stop, signal.SIGSTOP)  # `cluster stop` must end a frozen one too
    finally:
        stopping = time.monotonic()
        stopped = llamalab("cluster", "stop")
    assert stopped.returncode == 0 and "cluster stopped" in stopped.stdout
    assert time.monotonic() - stopping < 20
    assert gone(victim) and gone(frozen_at_stop)


def test_an_instance_that_cannot_restart_is_retried_with_a_growing_delay(
    lab: LabConfig, tmp_path: Path
) -> None:
    model = tmp_path / "model.gguf"
    os.link(lab.model, model)  # the same file under a name the test can take away
    started = llamalab(
        "cluster", "start", "--instances", "2", "--parallel", "1", "--threads", "1",
        "--model", str(model), *ports(lab),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        model.rename(tmp_path / "away.gguf")  # every restart now exits at once
        os.kill(status()["instances"][1]["pid"], signal.SIGKILL)
        wait_for_step(1, "died", timeout=30)
        time.sleep(8)
        steps = [h for h in status()["history"] if h["index"] == 1]
        waits = [h["detail"] for h in steps if h["what"] == "restarting"]
        # Tries at 0, 1, 3 and 7 s: four in 8 s, where a hot loop would make hundreds.
        assert 2 <= sum(h["what"] == "restart failed" for h in steps) <= 5, steps
        assert waits[:3] == ["in 1 s", "in 2 s", "in 4 s"], steps
        assert chat(f"http://127.0.0.1:{lab.nginx_port}") > 0  # server 0 serves meanwhile
        (tmp_path / "away.gguf").rename(model)
        healed = wait_for_step(1, "back in rotation", timeout=120)
        assert [i["state"] for i in healed["instances"]] == ["ready", "ready"]
    finally:
        stopped = llamalab("cluster", "stop")
    assert stopped.returncode == 0 and "cluster stopped" in stopped.stdout
