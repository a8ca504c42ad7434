"""`--balance session` on the real nginx and llama-server: one conversation, one instance."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.results.reader import read_rows

pytestmark = pytest.mark.integration
SPREAD_SAMPLE = 24  # two instances missing every one of 24 keys: well under 1 in 1,000


def ask(endpoint: str, headers: dict[str, str]) -> None:
    body = json.dumps({"prompt": "Hello", "n_predict": 2, "cache_prompt": False}).encode()
    request = urllib.request.Request(
        f"{endpoint}/completion",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


def upstreams(access_log: Path, since: int, expected: int) -> list[str]:
    """Which instance nginx sent each request to, from its own access log.

    nginx logs a request after its last byte has gone out, so the client can read the whole
    reply before the line is written: wait (briefly) for all `expected` lines.
    """
    deadline = time.monotonic() + 10
    while True:
        lines = access_log.read_text().splitlines()[since:]
        found = [m.group(1) for line in lines if (m := re.search(r"upstream=(\S+)", line))]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_cluster_with_session_balance_keeps_a_conversation_on_one_instance(
    lab: LabConfig, lab_home: Path
) -> None:
    started = llamalab(
        "cluster",
        "start",
        "--instances",
        "2",
        "--parallel",
        "1",
        "--threads",
        "1",
        "--balance",
        "session",
        "--session-header",
        "X-Chat-Id",
        *ports(lab),
    )
    try:
        assert started.returncode == 0, started.stderr
        endpoint = f"http://127.0.0.1:{lab.nginx_port}"
        log = lab_home / "cluster" / "nginx-access.log"
        seen = len(log.read_text().splitlines())
        for _ in range(6):
            ask(endpoint, {"X-Chat-Id": "conversation-1"})
        pinned = upstreams(log, seen, 6)
        assert len(pinned) == 6 and len(set(pinned)) == 1, pinned

        seen += len(pinned)
        for i in range(SPREAD_SAMPLE):
            ask(endpoint, {"X-Chat-Id": f"conversation-{i + 2}"})
        many = Counter(upstreams(log, seen, SPREAD_SAMPLE))
        assert len(many) == 2, f"{SPREAD_SAMPLE} conversations all on one instance: {many}"

        seen += SPREAD_SAMPLE
        for _ in range(SPREAD_SAMPLE):
            ask(endpoint, {})  # no header: keyed per request, so spread, never funnelled
        anonymous = Counter(upstreams(log, seen, SPREAD_SAMPLE))
        assert len(anonymous) == 2, f"requests without the header all went to one: {anonymous}"
    finally:
        stopped = llamalab("cluster", "stop")
    assert stopped.returncode == 0


def test_a_full_sweep_measures_round_robin_and_session_side_by_side(
    lab: LabConfig, tmp_path: Path
) -> None:
    results = tmp_path / "res"
    out = llamalab(
        "sweep",
        "full",
        "--instances",
        "2",
        "--parallel",
        "1",
        "--concurrency",
        "2",
        "--n-predict",
        "8",
        "--requests",
        "4",
        "--threads",
        "1",
        "--balance",
        "round_robin,session",
        "--results",
        str(results),
        *ports(lab),
    )
    assert out.returncode == 0, out.stderr
    (jsonl,) = results.glob("sweep-full-*.jsonl")
    rows = read_rows(jsonl)
    assert [r["balance"] for r in rows] == ["round_robin", "session"]
    assert all(r["requests_ok"] == 4 and not r["error"] for r in rows)
