"""The lab engine: processes, proxy, load, runs, sweeps and results. It never imports Textual,
so the headless CLI and the TUI drive exactly the same code."""
