"""Benchmark 2: the adaptive sweep with intervals against the full grid, same space, same box.

All go through the CLI's own path (RunSettings -> build_plan -> runner_for), real llama-server
instances of the default model behind a real nginx. The grid runs once (every cell measured
once: the reference); the adaptive sweep with `--repeats` (its finalists measured again while
their 95 % intervals overlap) runs `--runs` times. Printed per adaptive run: the cell it picked,
its own figure (the mean of its finalist measurements) and the grid's figure for that cell,
each over the grid's best (target >= 0.97: within 3 %), and its wall time over the grid's
(target <= 0.30).

    python -m benchmarks.adaptive_vs_grid [--n-predict 32] [--repeats 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from benchmarks.report import machine_note, print_table, ratio
from tui_lab.cli.progress import ProgressPrinter
from tui_lab.engine.plan.config import Cell
from tui_lab.engine.plan.search import describe
from tui_lab.engine.processes.run_folder import new_run_dir
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.run_settings import RunSettings, build_plan, lab_config, load_settings
from tui_lab.engine.sweeps.adaptive import AdaptiveRunner, runner_class
from tui_lab.engine.sweeps.runner import Outcome, PlanRunner

# Columns that name a cell in both runs' rows (the `cell` number differs: trial order).
KEY = ("instances", "parallel", "concurrency", "n_predict", "batch_size", "ubatch_size", "balance")
TARGET_BEST, TARGET_WALL = 0.97, 0.30


def _key(row: Mapping[str, object]) -> tuple[object, ...]:
    return tuple(row[k] for k in KEY)


def _clean(row: Mapping[str, object]) -> bool:
    return not row["error"] and row["requests_failed"] == 0


async def _timed(runner: PlanRunner) -> tuple[Outcome, float]:
    start = time.monotonic()
    outcome = await runner.run()
    return outcome, time.monotonic() - start


def measure(settings: RunSettings, results: Path) -> tuple[Outcome, float, PlanRunner]:
    plan = build_plan(settings)
    lab = lab_config(settings, need_nginx=True)
    progress = ProgressPrinter(sys.stderr)
    with ResultsWriter(results, plan.run, {"run": plan.run}, {}) as writer:
        runner = runner_class(plan)(
            plan, lab, load_settings(settings), progress.handle, new_run_dir(plan.run), writer
        )
        outcome, wall = asyncio.run(_timed(runner))
    progress.close()
    print(f"{plan.run}: {wall:.0f} s, rows in {writer.jsonl_path}", file=sys.stderr)
    return outcome, wall, runner


def _cell_name(row: Mapping[str, object]) -> str:
    return f"{row['instances']}x{row['parallel']} c={row['concurrency']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="1,2")
    parser.add_argument("--parallel", default="1,4,16")
    parser.add_argument("--concurrency", default="1,4,16,32,64")
    parser.add_argument("--n-predict", default="32")
    parser.add_argument("--repeats", default="3", help="the adaptive runs' --repeats")
    parser.add_argument("--runs", type=int, default=3, help="adaptive runs against the one grid")
    parser.add_argument(
        "--threads",
        default="1",
        help="llama-server --threads (default 1: on a shared box, a server whose threads meet "
        "at a barrier every token collapses when another process takes one of its cores)",
    )
    parser.add_argument("--order", choices=("grid-first", "adaptive-first"), default="grid-first")
    parser.add_argument("--base-port", default="8100")
    parser.add_argument("--nginx-port", default="8000")
    parser.add_argument("--results", help="folder for all runs' results (default: a temp folder)")
    args = parser.parse_args()
    results = Path(args.results or tempfile.mkdtemp(prefix="adaptive-vs-grid-"))
    grid_settings = RunSettings(
        kind="sweep-full",
        instances=args.instances,
        parallel=args.parallel,
        concurrency=args.concurrency,
        n_predict=args.n_predict,
        threads=args.threads,
        base_port=args.base_port,
        nginx_port=args.nginx_port,
    )
    adaptive_settings = grid_settings.with_values(kind="sweep-adaptive", repeats=args.repeats)
    searches: list[tuple[Outcome, float, PlanRunner]] = []
    if args.order == "adaptive-first":
        searches += [measure(adaptive_settings, results) for _ in range(args.runs)]
    grid, grid_wall, _ = measure(grid_settings, results)
    if args.order == "grid-first":
        searches += [measure(adaptive_settings, results) for _ in range(args.runs)]

    grid_rows = [r for r in grid.rows if _clean(r)]
    grid_best = max(grid_rows, key=lambda r: float(r["output_tok_per_s"]))  # type: ignore[arg-type]
    grid_tok = float(grid_best["output_tok_per_s"])  # type: ignore[arg-type]
    by_key = {_key(r): r for r in grid_rows}
    table = [
        (
            "full grid",
            _cell_name(grid_best),
            f"{grid_tok:.1f}",
            "1.00",
            "1.00",
            f"{grid_wall:.0f}",
            "1.00",
            str(len(grid.rows)),
            str(sum(int(r["requests"]) for r in grid.rows)),  # type: ignore[call-overload]
        )
    ]
    for number, (searched, wall, runner) in enumerate(searches, 1):
        assert isinstance(runner, AdaptiveRunner)
        best = runner.result.best if runner.result else None
        picked: Cell | None = best.cell if best else None
        grid_of_pick = None
        if picked is not None:
            row = by_key.get(_key({**picked.params(), "n_predict": picked.n_predict}))
            grid_of_pick = float(row["output_tok_per_s"]) if row else None  # type: ignore[arg-type]
        probes = sum(1 for r in searched.rows if r["phase"] == "probe")
        measured = sum(int(r["repeats"]) for r in searched.rows)  # type: ignore[call-overload]
        requests = sum(
            int(r["requests"]) * max(1, int(r["repeats"]))  # type: ignore[call-overload]
            for r in searched.rows
        )
        table.append(
            (
                f"adaptive {number}",
                describe(picked) if picked else "none",
                f"{best.result.tok_per_s:.1f}" if best else "n/a",
                ratio(best.result.tok_per_s if best else None, grid_tok),
                ratio(grid_of_pick, grid_tok),
                f"{wall:.0f}",
                ratio(wall, grid_wall),
                f"{measured} ({probes} probes)",
                str(requests),
            )
        )
    print_table(
        f"Adaptive sweep with --repeats {args.repeats} vs full grid: instances {args.instances} "
        f"x parallel {args.parallel} x concurrency {args.concurrency}, n_predict "
        f"{args.n_predict}, threads {args.threads}, default model",
        (
            "run",
            "picked cell",
            "tok/s",
            "/ grid best",
            "grid's own / best",
            "wall s",
            "/ grid wall",
            "measurements",
            "requests",
        ),
        table,
        [
            f"targets: picked / grid best >= {TARGET_BEST} (its own mean, and the grid's single "
            f"figure for the same cell); wall / grid wall <= {TARGET_WALL}",
            f"order: {args.order}; results in {results}",
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
