"""Benchmark 1a: is the load client ever what a user measures?

nginx answers `/completion` with a canned llama-server reply (and a canned SSE stream), so the
server costs nothing; the client under test is pinned to one core. Our aiohttp client is run
beside `wrk` (the practical ceiling of an HTTP client) and beside the original lab's approach, a
thread pool of urllib workers, in the same run, at concurrency 1, 64 and 1024.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tui_lab.engine.discovery import find_nginx
from tui_lab.engine.load import LoadSpec, run_load
from tui_lab.engine.ports import port_is_free
from tui_lab.engine.stats import summarize_load

CANNED = json.dumps(
    {"content": " hello" * 16, "stop": True, "tokens_predicted": 16, "tokens_evaluated": 8}
)
SSE_TOKENS = 64  # nginx caps one quoted parameter at 4 KB
SSE = (
    "".join(
        f'data: {{"content":" t","stop":false,"tokens_predicted":{i}}}\\n\\n'
        for i in range(1, SSE_TOKENS)
    )
    + f'data: {{"content":"","stop":true,"tokens_predicted":{SSE_TOKENS - 1}}}\\n\\n'
)


def nginx_conf(run: Path, port: int) -> str:
    temp = "\n".join(
        f"    {k}_temp_path {run / k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
{temp}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 1000000;
        location = /completion {{
            default_type application/json;
            return 200 '{CANNED}';
        }}
        location = /stream/completion {{
            default_type text/event-stream;
            return 200 '{SSE}';
        }}
    }}
}}
"""


def free_port() -> int:
    for port in range(47000, 48000):
        if port_is_free("127.0.0.1", port):
            return port
    raise RuntimeError("no free port")


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def child(kind: str, url: str, concurrency: int, requests: int) -> list[float]:
    """Runs inside the pinned child process: one client, one measurement."""
    if kind == "threads":
        body = json.dumps({"prompt": "x", "n_predict": 16}).encode()
        headers = {"Content-Type": "application/json"}

        def one(_: int) -> None:
            req = urllib.request.Request(f"{url}/completion", data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        return [requests / (time.perf_counter() - start), 0.0, 0.0]
    spec = LoadSpec(
        url=url, concurrency=concurrency, requests=requests, n_predict=16, stream=kind == "stream"
    )
    s = summarize_load(asyncio.run(run_load(spec)))
    return [s.requests_per_s, s.output_tok_per_s, float(s.requests_failed)]


def measure(kind: str, url: str, concurrency: int, requests: int) -> tuple[float, float]:
    cmd = [
        *pinned(0),
        sys.executable,
        __file__,
        "--child",
        kind,
        url,
        str(concurrency),
        str(requests),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps, tps, failed = json.loads(out)
    if failed:
        raise RuntimeError(f"{kind}: {failed:.0f} requests failed")
    return rps, tps


def wrk(url: str, concurrency: int, seconds: int = 5) -> float | None:
    if shutil.which("wrk") is None:
        return None
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\nwrk.body = \'{"prompt":"x","n_predict":16}\'\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        [
            *pinned(0),
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"{url}/completion",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script.unlink()
    line = next(x for x in out.splitlines() if x.startswith("Requests/sec:"))
    return float(line.split()[1])


def main() -> None:
    nginx = find_nginx()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (run / k).mkdir()
        (run / "nginx.conf").write_text(nginx_conf(run, port))
        proc = subprocess.Popen(
            [
                *pinned(1),
                str(nginx),
                "-e",
                str(run / "error.log"),
                "-p",
                str(run),
                "-c",
                str(run / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 10
            while port_is_free("127.0.0.1", port) and time.monotonic() < deadline:
                time.sleep(0.1)
            rows = []
            for c, n in ((1, 2000), (64, 20000), (1024, 40000)):
                rps, _ = measure("ours", url, c, n)
                pool, _ = measure("threads", url, c, min(n, 20000))
                ref = wrk(url, c)
                rows.append((c, rps, ref, pool))
            _, tokens = measure("stream", url + "/stream", 64, 2000)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"\nLoad client cost, client pinned to one core ({os.cpu_count()} cores here)")
    print(
        f"{'concurrency':>11}  {'ours req/s':>10}  {'wrk req/s':>10}  {'threads req/s':>13}  "
        f"{'ours/threads':>12}  {'ours/wrk':>8}"
    )
    for c, rps, ref, pool in rows:
        ref_text = f"{ref:10.0f}" if ref else f"{'n/a':>10}"
        ratio = f"{rps / ref:8.2f}" if ref else f"{'n/a':>8}"
        print(f"{c:>11}  {rps:10.0f}  {ref_text}  {pool:13.0f}  {rps / pool:12.2f}  {ratio}")
    print(f"streaming: {tokens:,.0f} SSE tokens/s parsed on one core (target 100,000)")
    print("targets at 1024 in flight: >= 3x the thread pool, >= 10,000 req/s on one core")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, url, c, n = sys.argv[2:6]
        print(json.dumps(child(kind, url, int(c), int(n))))
    else:
        main()
