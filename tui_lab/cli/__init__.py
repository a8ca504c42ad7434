"""The headless `llamalab`: the same engine as the TUI, driven from a terminal or a script."""
