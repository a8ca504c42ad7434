"""Benchmarks 1b and 1d: the lab's best against the engine's own peak; our token counts against
the servers'.

1b. `llama-batched-bench` (built beside llama-server) runs P sequences in one process with no
HTTP: the most this machine's engine gives for the default model. Beside it, in the same run,
the lab measures one instance with parallel P and P clients for each P, through nginx, at the
same n_predict, each cell followed at once by batched-bench at the same P. The prompt given to
batched-bench has as many tokens as the lab's prompt (read back from the servers' count).

Two engine figures, both printed. "Same work" is generated tokens over batched-bench's whole
time (pl * tg / t): the job each lab request does, prefill of its prompt included (the lab
sends no prompt-cache hits, so cells compare fairly). The lab's best over the best of these is
the target (at least 90%): what is left over is what HTTP, nginx, llama-server's slots and its
sampling cost. S_TG is batched-bench's decode-only rate, prefill left out: lab / S_TG is lower
by the prompt's share of the engine's time, which is work, not overhead.

1d. Each cell's row holds the client's output tokens and the servers' own /metrics count over
the cell; they must be equal.

    python -m benchmarks.engine_limit [--parallel 4,16,32] [--n-predict 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from benchmarks.adaptive_vs_grid import measure
from benchmarks.report import machine_note, print_table, ratio
from tui_lab.engine.machine.discovery import find_model, find_server, sibling_tool
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.settings.run_settings import RunSettings

TARGET = 0.90


def lab_cell(p: int, n_predict: int, base: int, results: Path) -> dict[str, object]:
    """One cell: 1 instance, P slots, P clients, through the lab's own sweep path."""
    settings = RunSettings(
        kind="sweep-full",
        instances="1",
        parallel=str(p),
        concurrency=str(p),
        n_predict=str(n_predict),
        base_port=str(base),
        nginx_port=str(base + 1),
    )
    outcome, _, _ = measure(settings, results)
    return outcome.rows[0]


def prompt_tokens(row: dict[str, object]) -> int:
    """The lab prompt's length as the server counted it (32 if the cell failed)."""
    ok = int(row["requests_ok"] or 0)  # type: ignore[call-overload]
    return round(int(row["prompt_tokens"]) / ok) if ok else 32  # type: ignore[call-overload]


def batched_bench(parallels: list[int], prompt: int, n_predict: int) -> list[dict[str, float]]:
    tool = sibling_tool(find_server(), "llama-batched-bench")
    if tool is None:
        raise SystemExit("llama-batched-bench is not beside llama-server")
    ctx = max(parallels) * (prompt + n_predict) + 256
    cmd = [
        str(tool),
        "-m",
        str(find_model()),
        "-c",
        str(ctx),
        "-npp",
        str(prompt),
        "-ntg",
        str(n_predict),
        "-npl",
        ",".join(map(str, parallels)),
        "--output-format",
        "jsonl",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def same_work(e: dict[str, float]) -> float:
    """Generated tok/s over batched-bench's whole time, prefill included: the lab's own work."""
    return e["pl"] * e["tg"] / e["t"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", default="4,16,32")
    parser.add_argument("--n-predict", type=int, default=64)
    args = parser.parse_args()
    parallels = [int(p) for p in args.parallel.split(",")]
    base = free_port_block(2)
    rows: list[dict[str, object]] = []
    engine: list[dict[str, float]] = []
    prompt = 0
    # Each lab cell is followed at once by batched-bench at the same P: on a shared machine the
    # load changes by the minute, and a ratio is only fair between neighbours in time.
    with tempfile.TemporaryDirectory(prefix="engine-limit-") as tmp:
        for p in parallels:
            rows.append(lab_cell(p, args.n_predict, base, Path(tmp)))
            prompt = prompt or prompt_tokens(rows[0])
            engine.extend(batched_bench([p], prompt, args.n_predict))
    peak = max(engine, key=lambda e: e["speed_tg"])
    peak_work = max(engine, key=same_work)
    lab = [float(r["output_tok_per_s"] or 0) for r in rows]  # type: ignore[arg-type]
    best = max(range(len(rows)), key=lambda i: lab[i])
    table = []
    for r, e, tok in zip(rows, engine, lab, strict=True):
        client, server = r["output_tokens"], r["server_output_tokens"]
        table.append(
            [
                str(r["parallel"]),
                f"{tok:.1f}",
                f"{e['speed_tg']:.1f}",
                ratio(tok, e["speed_tg"]),
                f"{same_work(e):.1f}",
                ratio(tok, same_work(e)),
                str(client),
                str(server),
                "equal" if client == server and client else "NOT EQUAL",
            ]
        )
    print_table(
        f"1b/1d. Engine limit and token accounting: default model, 1 instance x P slots, "
        f"C = P, n_predict {args.n_predict}, prompt {prompt} tokens",
        [
            "P",
            "lab tok/s",
            "engine S_TG",
            "lab/S_TG",
            "engine same work",
            "lab/same work",
            "client tok",
            "server tok",
            "1d",
        ],
        table,
        [
            f"lab best {lab[best]:.1f} tok/s (P={rows[best]['parallel']}) / engine peak, same "
            f"work {same_work(peak_work):.1f} tok/s (P={peak_work['pl']}): "
            f"{ratio(lab[best], same_work(peak_work))} (target >= {TARGET})",
            f"lab best / engine peak S_TG {peak['speed_tg']:.1f} tok/s (P={peak['pl']}), decode "
            f"only: {ratio(lab[best], peak['speed_tg'])} (lower by the prefill's share)",
            "S_TG: decoding only, no HTTP; same work: pl*tg/t, prefill included, no HTTP; "
            "the lab: end to end through nginx; each pair measured back to back, one run each",
            "1d: client tokens (from the responses) vs the servers' /metrics over the cell",
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
