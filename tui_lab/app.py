"""`llamalab-tui`: the full-screen lab.

The screens come with the TUI issue; until then this says so.
"""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "llamalab-tui: the full-screen interface is not built yet; "
        "use the headless CLI meanwhile:\n"
        "  .venv/bin/llamalab --help",
        file=sys.stderr,
    )
    return 0
