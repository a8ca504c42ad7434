"""`llamalab report` on a real sweep, opened in headless Chromium with the network cut off:
the page must draw every plot from the file alone."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig

pytestmark = pytest.mark.integration

PLOTS = ("throughput", "heatmap", "tradeoff", "latency")
# Any host name fails to resolve and any proxied request goes to a closed port: a page that
# needed the network would show its holes.
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")


def screenshot(page: Path, shot: Path, size: str, profile: Path) -> Image.Image:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: scripts/setup.sh --dev installs it"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *OFFLINE,
            f"--screenshot={shot}",
            f"--window-size={size}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return Image.open(shot).convert("RGB")


def coloured_pixels(image: Image.Image) -> int:
    """Pixels of a plot's data (lines, bars, a heat map's cells): saturated ones, where the
    axes, ticks and text are black or grey."""
    pixels = np.asarray(image, dtype=np.int16)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())


def test_report_of_a_real_sweep_draws_its_plots_offline(lab: LabConfig, tmp_path: Path) -> None:
    results = tmp_path / "res"
    sweep = llamalab(
        "sweep", "full", "--instances", "1", "--parallel", "2", "--concurrency", "1,2,4",
        "--n-predict", "8", "--requests", "4", "--threads", "1", "--stream",
        "--results", str(results), *ports(lab),
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    (jsonl,) = results.glob("sweep-full-*.jsonl")
    out = tmp_path / "report" / "lab.html"
    made = llamalab("report", str(jsonl), "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert str(out) in made.stdout
    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?https?:", page, re.IGNORECASE)
    assert out.with_suffix(".md").is_file()

    whole = screenshot(out, tmp_path / "page.png", "1200,5000", tmp_path / "profile")
    assert coloured_pixels(whole) > 20_000, "the page shows no plot"
    for name in PLOTS:
        # The same page with every part but this plot hidden, so its pixels are its own.
        alone = tmp_path / f"{name}.html"
        only = f"<style>body > :not(#plot-{name}) {{ display: none !important; }}</style>"
        alone.write_text(page.replace("</head>", f"{only}</head>"))
        image = screenshot(alone, tmp_path / f"{name}.png", "800,600", tmp_path / "profile")
        # A blank axes box scores 0 and a legend alone under 100; one line of 3 cells ~1700.
        assert coloured_pixels(image) > 800, f"the {name} plot is empty"
