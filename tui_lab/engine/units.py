"""Sizes as people read them, for the panel and the CLI alike."""

from __future__ import annotations


def human_bytes(value: int | None) -> str:
    """Binary units (1K = 1024 B); "-" for a figure that is not known."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit in ("B", "K") else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


def figure_text(value: float) -> str:
    """Two decimals where they carry information (0.47 s), one where they are noise (1234.5 t/s)."""
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
