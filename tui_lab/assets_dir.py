"""Where the stylesheets live: `assets/` in a checkout, `tui_lab/assets` in an installed wheel
(pyproject maps the one onto the other)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
ASSETS = next((p for p in (_HERE / "assets", _HERE.parent / "assets") if p.is_dir()), _HERE)
