"""`asyncio.run` on uvloop when it is installed, on the standard loop otherwise.

Why: the load generator's cost is mostly the event loop's socket work; on the canned-nginx
benchmark (benchmarks/) uvloop's libuv loop raises what one core can drive at 1024 in flight
by roughly a quarter to a half. It is optional because it has no Windows build and is a
C extension that may be missing elsewhere; the standard loop gives the same results, slower.
`LLAMALAB_NO_UVLOOP=1` forces the standard loop (to compare, or to rule uvloop out).
The TUI keeps Textual's own loop: its cost is drawing, not sockets.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (the standard loop) when absent or switched off."""
    if os.environ.get("LLAMALAB_NO_UVLOOP"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    return "uvloop" if loop_factory() else "asyncio"


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
