"""The standing cluster of a sweep's best cell: the layout its row records, the server
settings the sweep ran with, the addresses the user has now.

The last step of a sweep used to be typing the best layout again into `cluster start`; this
is that step, so what serves is what was measured (threads, slots, placement, server flags,
batch sizes), reached where the user's current settings say.
"""

from __future__ import annotations

import shlex

from tui_lab.engine.results.reader import Row
from tui_lab.engine.settings.run_settings import RunSettings

# Server-side settings the sweep did not sweep: as it recorded them.
BALANCES = ("round_robin", "least_conn", "session")  # a direct run's row says "direct"
RECORDED = ("server_args", "ctx_per_slot", "upstream_keepalive", "session_header", "model")


def _text(value: object, blank: str) -> str:
    return blank if value is None else str(value)


def winner_settings(current: RunSettings, best: Row, recorded: RunSettings | None) -> RunSettings:
    """`current` (addresses, binaries, key) with the sweep's server settings and the best
    row's layout: what `cluster start` is given to serve that cell."""
    values: dict[str, str | bool] = {}
    if recorded is not None:
        values = {name: getattr(recorded, name) for name in RECORDED}
        values["model"] = str(values["model"]).split("|")[0]  # the row names its own, if any
    args = shlex.split(str(values.get("server_args", current.server_args)))
    for flag, column in (("--batch-size", "batch_size"), ("--ubatch-size", "ubatch_size")):
        if best.get(column) is not None:
            args += [flag, str(best[column])]
    if best.get("server_flags"):
        args += shlex.split(str(best["server_flags"]))
    balance = best.get("balance")
    values.update(
        kind="test-round-robin",
        instances=str(best.get("instances")),
        parallel=str(best.get("parallel")),
        threads=_text(best.get("threads"), "default"),
        threads_http=_text(best.get("threads_http"), "default"),
        placement=_text(best.get("placement"), "shared"),
        gpus=_text(best.get("gpus"), "all"),
        balance=str(balance) if balance in BALANCES else "round_robin",
        server_args=shlex.join(args),
    )
    if best.get("model"):
        values["model"] = str(best["model"])
    return current.with_values(**values)
