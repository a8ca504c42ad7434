"""`llamalab report`: one self-contained HTML file and the same in Markdown, from a sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tui_lab.cli import main as cli
from tui_lab.engine.results.report import recommend, write_report
from tui_lab.engine.results.sweep_file import load_sweep


def _row(cell: int, instances: int, parallel: int, conc: int, tps: float) -> dict[str, object]:
    return {
        "cell": cell,
        "instances": instances,
        "parallel": parallel,
        "concurrency": conc,
        "output_tok_per_s": tps,
        "decode_tok_per_s": 60.0 / conc,
        "e2el_ms_p50": 100.0 * conc,
        "e2el_ms_p90": 120.0 * conc,
        "e2el_ms_p99": 150.0 * conc,
        "ttft_ms_p99": None,
        "requests_failed": 0,
        "error": None,
        "phase": "full",
        "eligible": conc * 150.0 <= 500,  # as an adaptive sweep with --max-p99-ms 500 marks it
    }


ROWS = [
    _row(1, 1, 1, 1, 20.0),
    _row(2, 1, 1, 4, 30.0),
    _row(3, 2, 4, 1, 25.0),
    _row(4, 2, 4, 4, 55.5),
]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "sweep-full-1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    meta = {
        "sweep_name": "sweep-full",
        "started_at": "2026-12-02T03:00:00+00:00",
        "csv": "sweep-full-1.csv",
        "jsonl": path.name,
        "config": {"settings": {"n_predict": "8", "max_p99_ms": "500"}},
        "machine": {"hostname": "box-under-test", "cpu_logical": 2},
    }
    path.with_suffix(".meta.json").write_text(json.dumps(meta))
    return path


def test_html_is_one_file_with_every_plot_and_no_outside_url(results: Path) -> None:
    files = write_report(load_sweep(results))
    assert files.html == results.with_name("sweep-full-1.report.html")
    page = files.html.read_text()
    assert page.count("<svg") == 4
    for name in ("throughput", "heatmap", "tradeoff", "latency"):
        assert f'id="plot-{name}"' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page
    assert "box-under-test" in page and "max_p99_ms" in page
    # Cell 4 is fastest but its p99 (600 ms) breaks the 500 ms bound; cell 2's does too.
    assert "p99 latency 600 ms over the 500 ms bound: 1×1 c=4, 2×4 c=4" in page
    assert "2 instances × 4 slots, up to 1 client: 25 tok/s in all" in page


def test_markdown_says_the_same_and_links_its_plot_files(results: Path, tmp_path: Path) -> None:
    files = write_report(load_sweep(results), tmp_path / "out" / "lab")
    assert files.html.name == "lab.html" and files.markdown.name == "lab.md"
    text = files.markdown.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == 4
    assert all((files.markdown.parent / link).is_file() for link in links)
    assert recommend(load_sweep(results)) in text
    assert "| cell | phase | instances |" in text


def test_out_may_be_a_folder(results: Path, tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    files = write_report(load_sweep(results), folder)
    assert files.html == folder / "sweep-full-1.report.html" and files.markdown.is_file()


def test_without_a_meta_file_the_report_says_so(results: Path) -> None:
    results.with_suffix(".meta.json").unlink()
    sweep = load_sweep(results)
    assert "no .meta.json" in write_report(sweep).markdown.read_text()
    assert "Set apart" not in write_report(sweep).markdown.read_text()  # no bounds recorded
    assert "no .meta.json" in write_report(sweep).html.read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "no rows"), ('not json\n{"cell": 1}\n', ":1: not a JSON object")],
)
def test_an_empty_or_foreign_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sweep.jsonl"
    path.write_text(content)
    assert cli.main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.jsonl"]
