"""`llamalab report`: one sweep as a self-contained HTML file and the same in Markdown.

The HTML carries everything inline (styles and SVG plots, no script, no external URL), so it
opens from a mail attachment or an air-gapped box exactly as it was written. The Markdown is for
a repository or a wiki: its plots are SVG files in a folder beside it, linked relatively.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tui_lab.engine.results import report_plots
from tui_lab.engine.results.pareto import PER_USER, front, tradeoff
from tui_lab.engine.results.ranking import RANKED_BY, best_cell
from tui_lab.engine.results.reader import ResultsFileError, Row
from tui_lab.engine.results.recommendation import recommendation
from tui_lab.engine.results.sweep_file import SweepFile
from tui_lab.engine.units import figure_text

COLUMNS = (
    "cell",
    "phase",
    "instances",
    "parallel",
    "concurrency",
    "balance",
    "n_predict",
    "requests_ok",
    "requests_failed",
    RANKED_BY,
    f"{RANKED_BY}_ci_low",
    f"{RANKED_BY}_ci_high",
    PER_USER,
    "e2el_ms_p50",
    "e2el_ms_p99",
    "ttft_ms_p50",
    "ttft_ms_p99",
    "error",
)
PLOTS: tuple[tuple[str, str], ...] = (
    ("throughput", "Throughput against concurrency"),
    ("heatmap", "Instances × parallel"),
    ("tradeoff", "Trade-off: per-user speed against total (Pareto front)"),
    ("latency", "Latency percentiles"),
)
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
tr.best td { font-weight: bold; background: #e8f5e9; }
.answer { font-size: 1.2em; padding: 0.6em 1em; background: #e8f5e9;
          border-left: 4px solid #2e7d32; }
div.wide { overflow-x: auto; }
figure.plot { margin: 1em 0 2em; } figure.plot svg { max-width: 100%; height: auto; }
"""


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    plots: Path  # the folder of the Markdown's SVG files


def default_out(results: Path) -> Path:
    return results.with_name(f"{results.stem}.report.html")


def recommend(sweep: SweepFile) -> str:
    """The words the CLI and the results screen give (results/recommendation.py)."""
    words = recommendation(sweep.rows)
    if words is None:
        return "No recommendation: no cell ran without errors within the bounds."
    return words[0].upper() + words[1:] + "."


def write_report(sweep: SweepFile, out: Path | None = None) -> ReportFiles:
    """Write the HTML, the Markdown beside it and the Markdown's plot folder; return where."""
    target = out or default_out(sweep.path)
    if target.is_dir():
        target = target / default_out(sweep.path).name
    elif target.suffix != ".html":
        target = target.with_name(f"{target.name}.html")
    files = ReportFiles(target, target.with_suffix(".md"), target.with_name(f"{target.stem}-plots"))
    plots = {name: svg for name, svg in _draw(sweep).items() if svg is not None}
    try:
        files.plots.mkdir(parents=True, exist_ok=True)
        for name, svg in plots.items():
            (files.plots / f"{name}.svg").write_text(svg, encoding="utf-8")
        files.html.write_text(render(sweep, plots, _Html()), encoding="utf-8")
        files.markdown.write_text(
            render(sweep, plots, _Markdown(files.plots.name)), encoding="utf-8"
        )
    except OSError as exc:
        raise ResultsFileError(
            f"cannot write the report to {target}: {exc.strerror or exc}"
        ) from None
    return files


def _draw(sweep: SweepFile) -> dict[str, str | None]:
    return {
        "throughput": report_plots.throughput_plot(sweep.rows),
        "heatmap": report_plots.heat_map(sweep.rows),
        "tradeoff": report_plots.tradeoff_plot(tradeoff(sweep.rows, sweep.bounds)),
        "latency": report_plots.latency_plot(sweep.rows),
    }


class _Format(Protocol):
    """One way of writing the report's parts; HTML and Markdown each fill it in."""

    def heading(self, text: str, level: int) -> str: ...

    def paragraph(self, text: str) -> str: ...

    def answer(self, text: str) -> str: ...

    def table(
        self, header: Sequence[str], lines: Sequence[Sequence[str]], marked: int | None
    ) -> str: ...

    def plot(self, name: str, title: str, svg: str) -> str: ...

    def document(self, title: str, body: str) -> str: ...


class _Html:
    def heading(self, text: str, level: int) -> str:
        return f"<h{level}>{html.escape(text)}</h{level}>"

    def paragraph(self, text: str) -> str:
        return f"<p>{html.escape(text)}</p>"

    def answer(self, text: str) -> str:
        return f'<p class="answer">{html.escape(text)}</p>'

    def table(
        self, header: Sequence[str], lines: Sequence[Sequence[str]], marked: int | None
    ) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            ('<tr class="best">' if i == marked else "<tr>")
            + "".join(f"<td{_align(c)}>{html.escape(c)}</td>" for c in line)
            + "</tr>"
            for i, line in enumerate(lines)
        )
        return (
            f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )

    def plot(self, name: str, title: str, svg: str) -> str:
        return f'<figure class="plot" id="plot-{name}" title="{html.escape(title)}">{svg}</figure>'

    def document(self, title: str, body: str) -> str:
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n"
        )


class _Markdown:
    def __init__(self, plots_folder: str) -> None:
        self.plots_folder = plots_folder

    def heading(self, text: str, level: int) -> str:
        return f"{'#' * level} {text}"

    def paragraph(self, text: str) -> str:
        return text

    def answer(self, text: str) -> str:
        return f"**{text}**"

    def table(
        self, header: Sequence[str], lines: Sequence[Sequence[str]], marked: int | None
    ) -> str:
        def line(cells: Sequence[str], bold: bool = False) -> str:
            cells = [c.replace("|", "\\|") for c in cells]
            return "| " + " | ".join(f"**{c}**" if bold and c else c for c in cells) + " |"

        rule = "|" + "|".join("---" for _ in header) + "|"
        return "\n".join([line(header), rule, *(line(c, i == marked) for i, c in enumerate(lines))])

    def plot(self, name: str, title: str, svg: str) -> str:
        return f"![{title}]({self.plots_folder}/{name}.svg)"

    def document(self, title: str, body: str) -> str:
        return body + "\n"


def render(sweep: SweepFile, plots: Mapping[str, str], form: _Format) -> str:
    title = f"llamalab report: {sweep.name}"
    parts = [form.heading(title, 1)]
    if sweep.started_at:
        parts.append(form.paragraph(f"Sweep started {sweep.started_at}; {len(sweep.rows)} rows."))
    parts += [form.heading("Recommendation", 2), form.answer(recommend(sweep))]
    parts += _tradeoff_words(sweep, form)
    parts.append(form.heading("Machine", 2))
    parts.append(_facts(sweep.machine, form) if sweep.has_meta else form.paragraph(_NO_META))
    parts.append(form.heading("Settings", 2))
    parts.append(_facts(sweep.settings, form) if sweep.has_meta else form.paragraph(_NO_META))
    parts.append(form.heading("Cells", 2))
    parts.append(_cells(sweep.rows, form))
    parts.append(form.heading("Plots", 2))
    for name, caption in PLOTS:
        parts.append(form.heading(caption, 3))
        svg = plots.get(name)
        parts.append(form.plot(name, caption, svg) if svg else form.paragraph(_NO_PLOT))
    return form.document(title, "\n\n".join(parts))


_NO_META = "Not recorded: this results file has no .meta.json beside it."
_NO_PLOT = "Nothing to draw: no cell of this sweep has the figures this plot needs."


def _tradeoff_words(sweep: SweepFile, form: _Format) -> list[str]:
    points = tradeoff(sweep.rows, sweep.bounds)
    if not points:
        return []
    line = ", ".join(
        f"{p.label} ({p.total:.1f} in all, {p.per_user:.1f} per user)" for p in front(points)
    )
    words = [
        form.paragraph(f"Pareto front (no other cell is faster both in all and per user): {line}.")
    ]
    by_reason: dict[str, list[str]] = {}
    for p in points:
        if p.apart:
            by_reason.setdefault(p.apart, []).append(p.label)
    if by_reason:
        reasons = "; ".join(f"{why}: {', '.join(cells)}" for why, cells in by_reason.items())
        words.append(form.paragraph(f"Set apart: {reasons}."))
    return words


def _facts(facts: Mapping[str, object], form: _Format) -> str:
    lines = [
        [name, figure_cell(value)] for name, value in facts.items() if value not in (None, "", [])
    ]
    return form.table(["fact", "value"], lines, None)


def _cells(rows: Sequence[Row], form: _Format) -> str:
    columns = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    best = best_cell(rows)
    lines = [[figure_cell(r.get(c)) for c in columns] for r in rows]
    marked = next((i for i, r in enumerate(rows) if r is best), None)
    return form.table(columns, lines, marked)


def figure_cell(value: object) -> str:
    """Any row value as a table shows it: also the TUI's compare screen, so both read alike."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return figure_text(value)
    if isinstance(value, list | tuple):
        return ", ".join(figure_cell(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {figure_cell(v)}" for k, v in value.items())
    return str(value)


def _align(cell: str) -> str:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return ' class="text"'
    return ""
