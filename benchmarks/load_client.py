"""Benchmark 1a: is the load client ever what a user measures?

nginx answers `/completion` with a canned llama-server reply (and a canned SSE stream), so the
server costs nothing; the client under test is pinned to one core, nginx to another. Beside our
client, in the same run: `wrk` (the practical ceiling of an HTTP client), the original lab's
approach (a thread pool of urllib workers), and our own client before issue 6 (a plain aiohttp
session with the json module, kept here as `old_aiohttp` so the before/after is measured, not
remembered). Each figure is the median of --repeats runs, interleaved so noise hits all alike.

`--profile` instead prints a pyinstrument profile of our client at 1024 in flight
(`--profile stream`: at 4,096 streams).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from benchmarks.report import (
    machine_note,
    mid,
    number,
    pinned,
    print_table,
    ratio,
)
from tui_lab.engine import event_loop
from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.load.stats import summarize_load
from tui_lab.engine.machine.discovery import find_nginx
from tui_lab.engine.processes.ports import free_port_block, port_is_free

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
BODY = json.dumps({"prompt": "x", "n_predict": 16}).encode()
CLIENT_CORE, NGINX_CORE = 0, 1
CONCURRENCY = ((1, 2000), (64, 20000), (1024, 40000))  # (in flight, requests)
SLOW_REQUESTS = 20000  # the references need longer per request
# (streams, requests): this box's scale and a GPU box's (64 instances x 64 slots). nginx sends
# each canned stream in one write, so the client parses many events a read, as from a fast server.
STREAMS = ((64, 3000), (4096, 40000))
STREAM_TARGET = 500_000  # tokens/s at 4,096 streams
# Figures of the client before issue 6 (commit 991d073, aiohttp + json), same machine, noisy.
BEFORE = "before issue 6 (991d073): 3,652 / 6,148 / 4,849 req/s at C=1/64/1024, 81,991 SSE tok/s"


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


@contextmanager
def canned_nginx() -> Iterator[str]:
    """nginx on its own core answering from memory; yields its base URL."""
    port = free_port_block(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (run / k).mkdir()
        (run / "nginx.conf").write_text(nginx_conf(run, port))
        conf = ["-e", str(run / "error.log"), "-p", str(run), "-c", str(run / "nginx.conf")]
        proc = subprocess.Popen(
            [*pinned(NGINX_CORE), str(find_nginx()), *conf, "-g", "daemon off;"]
        )
        try:
            deadline = time.monotonic() + 10
            while port_is_free("127.0.0.1", port) and time.monotonic() < deadline:
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# ---- the clients, each run in a pinned child process --------------------------------------


def threads_client(url: str, concurrency: int, requests: int) -> tuple[float, int]:
    headers = {"Content-Type": "application/json"}

    def one(_: int) -> None:
        req = urllib.request.Request(f"{url}/completion", data=BODY, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    return time.perf_counter() - start, 0


async def old_aiohttp_client(
    url: str, concurrency: int, requests: int, stream: bool
) -> tuple[float, int]:
    """The load path as it was before issue 6: aiohttp's session and the json module."""
    tokens = 0
    indices = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600), headers=headers
    ) as session:

        async def worker() -> None:
            nonlocal tokens
            for _ in indices:
                async with session.post(f"{url}/completion", data=BODY) as resp:
                    if not stream:
                        tokens += json.loads(await resp.read())["tokens_predicted"]
                        continue
                    async for raw in resp.content:
                        line = raw.strip()
                        if line.startswith(b"data:"):
                            event = json.loads(line[5:].strip())
                            tokens = tokens + 1 if event["content"] else tokens

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
        return time.perf_counter() - start, tokens


async def our_client(url: str, concurrency: int, requests: int, stream: bool) -> tuple[float, int]:
    spec = LoadSpec(
        url=url, concurrency=concurrency, requests=requests, n_predict=16, stream=stream
    )
    summary = summarize_load(await run_load(spec))
    if summary.requests_failed:
        raise RuntimeError(f"{summary.requests_failed} requests failed")
    return summary.wall_s, summary.output_tokens


def child(kind: str, url: str, concurrency: int, requests: int) -> dict[str, float]:
    """One client, one measurement: wall time, tokens and the client's CPU seconds."""
    stream = kind.endswith("stream")
    cpu = time.process_time()
    if kind == "threads":
        wall, tokens = threads_client(url, concurrency, requests)
    elif kind.startswith("old_aiohttp"):
        wall, tokens = asyncio.run(old_aiohttp_client(url, concurrency, requests, stream))
    else:  # "ours" on uvloop when installed, "ours_asyncio" on the standard loop
        wall, tokens = event_loop.run(our_client(url, concurrency, requests, stream))
    cpu = time.process_time() - cpu
    return {"rps": requests / wall, "tps": tokens / wall, "cpu_rps": requests / cpu}


def measure(kind: str, url: str, concurrency: int, requests: int) -> dict[str, float]:
    env = dict(os.environ)
    if kind.startswith("ours_asyncio"):
        env["LLAMALAB_NO_UVLOOP"] = "1"
    args = [kind, url, str(concurrency), str(requests)]
    cmd = [*pinned(CLIENT_CORE), sys.executable, "-m", "benchmarks.load_client", "--child", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out)


def wrk(url: str, concurrency: int, seconds: int = 4) -> float | None:
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(
            f"wrk.method = \"POST\"\nwrk.body = '{BODY.decode()}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        script.flush()
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", script.name]
        out = subprocess.run(
            [*pinned(CLIENT_CORE), *cmd, f"{url}/completion"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("Requests/sec:"))
    return float(line.split()[1])


# ---- the run ------------------------------------------------------------------------------

PLAIN_KINDS = ("ours", "ours_asyncio", "old_aiohttp", "threads", "wrk")
STREAM_KINDS = ("ours_stream", "ours_asyncio_stream", "old_aiohttp_stream")
OLD_STREAMS = 64  # the old client is measured at this many streams only: at 4,096 it takes minutes


def run(url: str, repeats: int) -> None:
    plain: dict[tuple[str, int], list[dict[str, float]]] = {}
    streamed: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(repeats):
        for concurrency, requests in CONCURRENCY:
            for kind in PLAIN_KINDS:
                if kind == "wrk":
                    got = wrk(url, concurrency)
                    figure = None if got is None else {"rps": got}
                else:
                    fast = kind.startswith("ours")
                    n = requests if fast else min(requests, SLOW_REQUESTS)
                    figure = measure(kind, url, concurrency, n)
                if figure is not None:
                    plain.setdefault((kind, concurrency), []).append(figure)
        for streams, requests in STREAMS:
            for kind in STREAM_KINDS:
                if kind.startswith("old") and streams != OLD_STREAMS:
                    continue
                figure = measure(kind, url + "/stream", streams, requests)
                streamed.setdefault((kind, streams), []).append(figure)

    def med(figures: list[dict[str, float]] | None, key: str) -> float | None:
        return mid([f[key] for f in figures or []])

    rows = []
    for concurrency, _ in CONCURRENCY:
        m = {k: med(plain.get((k, concurrency)), "rps") for k in PLAIN_KINDS}
        cpu = med(plain.get(("ours", concurrency)), "cpu_rps")
        rows.append(
            [
                str(concurrency),
                number(m["ours"]),
                number(cpu),
                number(m["ours_asyncio"]),
                number(m["old_aiohttp"]),
                number(m["threads"]),
                number(m["wrk"]),
                ratio(m["ours"], m["threads"]),
                ratio(m["ours"], m["old_aiohttp"]),
                ratio(m["ours"], m["wrk"]),
            ]
        )
    top = {k: med(plain.get((k, 1024)), "rps") for k in ("ours", "threads")}
    print_table(
        f"1a. Load client cost, requests/s, client pinned to one core ({event_loop.loop_name()})",
        [
            "C",
            "ours",
            "ours/CPU-s",
            "ours(asyncio)",
            "old aiohttp",
            "threads",
            "wrk",
            "/threads",
            "/old",
            "/wrk",
        ],
        rows,
        [
            "ours/CPU-s: requests per second of the client's own CPU time (less noise-prone)",
            f"target at C=1024: >= 10,000 req/s (got {number(top['ours'])}) and >= 3x threads "
            f"(got {ratio(top['ours'], top['threads'])})",
            BEFORE,
            machine_note(),
        ],
    )
    stream_rows = []
    for streams, _ in STREAMS:
        s = {k: med(streamed.get((k, streams)), "tps") for k in STREAM_KINDS}
        cpu_tps = med(streamed.get(("ours_stream", streams)), "cpu_rps")
        stream_rows.append(
            [
                f"{streams:,}",
                number(s["ours_stream"]),
                number(None if cpu_tps is None else cpu_tps * (SSE_TOKENS - 1)),
                number(s["ours_asyncio_stream"]),
                number(s["old_aiohttp_stream"]),
                ratio(s["ours_stream"], s["old_aiohttp_stream"]),
            ]
        )
    got = med(streamed.get(("ours_stream", STREAMS[-1][0])), "tps")
    print_table(
        "1a. Streaming: SSE tokens parsed per second on one core, by streams in flight",
        ["streams", "ours", "ours/CPU-s", "ours(asyncio)", "old aiohttp", "/old"],
        stream_rows,
        [
            f"target: >= 100,000 tokens/s at {STREAMS[0][0]} streams, >= {STREAM_TARGET:,} at "
            f"{STREAMS[-1][0]:,} (got {number(got)})",
            f"{SSE_TOKENS - 1} tokens a stream, each sent by nginx in one write; the old client "
            f"is measured at {OLD_STREAMS} streams only",
        ],
    )


def profile(url: str, what: str) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    if what == "stream":
        event_loop.run(our_client(url + "/stream", *STREAMS[-1], stream=True))
    else:
        event_loop.run(our_client(url, 1024, 20000, stream=False))
    profiler.stop()
    print(profiler.output_text(color=False, unicode=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--profile",
        nargs="?",
        const="plain",
        choices=("plain", "stream"),
        help="profile our client instead: plain at C=1024 (default) or stream at 4,096 streams",
    )
    args = parser.parse_args()
    with canned_nginx() as url:
        if args.profile:
            profile(url, args.profile)
        else:
            run(url, args.repeats)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, url, c, n = sys.argv[2:6]
        print(json.dumps(child(kind, url, int(c), int(n))))
    else:
        main()
