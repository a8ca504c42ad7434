"""The measured load in a thread of its own, with its own event loop, beside the caller's.

Why: at a GPU box's scale (64 instances, 4,096 requests in flight) responses arrive in bursts of
thousands, and a loop runs every ready callback of a burst before it looks at its timers. In the
TUI's loop that kept the dashboard (and a 10 ms sleep) waiting about 30 ms, with or without the
app (benchmarks/tui_cost.py). In a thread of its own, the load holds the GIL at most one switch
interval (5 ms) at a time while the caller's loop has work, whatever the size of its burst.

The load runs on uvloop when it is installed (engine/event_loop.py), as `llamalab load` does.
Its records are still handed to `on_record` on the caller's loop, in order, since the sinks
(the TUI's buffer, the CLI's progress, the event log) are not thread-safe: in batches, one
cross-thread wake-up per batch rather than per request, and all of them before `run` returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tui_lab.engine import event_loop
from tui_lab.engine.load.client import LoadResult, LoadSpec, RequestRecord, run_load

THREAD_NAME = "llamalab-load"
# A batch of records goes to the caller this long after its first record, or once this full:
# well under the TUI's 0.1 s frame, and a bounded stretch of work for the caller's loop.
BATCH_S = 0.025
BATCH_MAX = 512

RecordSink = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class _Started:
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop  # the thread's
    stop: asyncio.Event  # set on the thread's loop (call_soon_threadsafe) to end it


class LoadThread:
    """One thread for every load of a run: started on the first `run`, ended by `close`."""

    def __init__(self) -> None:
        self._started: _Started | None = None

    async def run(self, spec: LoadSpec, on_record: RecordSink | None = None) -> LoadResult:
        """`run_load(spec, on_record)` in the load thread, as if awaited here.

        Its exceptions reach the caller as themselves. Cancelling the caller cancels the load
        and waits until it has finished (its connections closed) before CancelledError goes on,
        so a cancelled cell leaves nothing running; a second cancellation stops the waiting,
        and `close` still waits for the load's end."""
        started = self._started or self._start()
        load = _Load(spec, on_record, asyncio.get_running_loop())
        started.loop.call_soon_threadsafe(load.start)
        outcome = asyncio.wrap_future(load.outcome)
        try:
            result = await asyncio.shield(outcome)  # cancelling us must not cancel `outcome`
        except asyncio.CancelledError:
            # Queued after `load.start`, and the thread's loop runs its callbacks in order.
            started.loop.call_soon_threadsafe(load.cancel)
            await asyncio.wait([outcome])
            raise
        if load.sink_error is not None:
            raise load.sink_error
        return result

    def close(self) -> None:
        """Stop the thread's loop and join the thread. `run` has waited for its load's end by
        then; a load left over (a second cancellation) is cancelled by the loop's shutdown and
        finishes before the thread ends."""
        started, self._started = self._started, None
        if started is None:
            return
        started.loop.call_soon_threadsafe(started.stop.set)
        started.thread.join()

    def _start(self) -> _Started:
        ready: concurrent.futures.Future[_Started] = concurrent.futures.Future()

        async def serve() -> None:
            ready.set_result(_Started(thread, asyncio.get_running_loop(), asyncio.Event()))
            await ready.result().stop.wait()

        # A daemon: a caller that dies before `close` must not keep the process from exiting.
        thread = threading.Thread(
            target=event_loop.run, args=(serve(),), name=THREAD_NAME, daemon=True
        )
        thread.start()
        # Blocks this loop while the thread makes its loop: well under a millisecond.
        self._started = ready.result()
        return self._started


class _Load:
    """One load seen from both threads: started, cancelled and batched in the load thread;
    records delivered and the outcome read on the caller's loop.

    The last batch is queued on the caller's loop before the outcome is set, and that loop
    runs what other threads queue in order: every record reaches `on_record` before `run`
    resumes with the result.

    Not `asyncio.run_coroutine_threadsafe`: cancelling its future marks it done at once, so
    the caller could not wait for the cancelled load to finish; here the outcome is settled by
    the load's task itself, once it has ended however it ended."""

    def __init__(
        self, spec: LoadSpec, on_record: RecordSink | None, caller: asyncio.AbstractEventLoop
    ) -> None:
        self.spec = spec
        self.on_record = on_record
        self.caller = caller
        self.outcome: concurrent.futures.Future[LoadResult] = concurrent.futures.Future()
        self.sink_error: Exception | None = None  # the first `on_record` failure
        self._task: asyncio.Task[LoadResult] | None = None
        self._batch: list[RequestRecord] = []
        self._due: asyncio.TimerHandle | None = None

    # ---- in the load thread

    def start(self) -> None:
        sink = self._add if self.on_record is not None else None
        self._task = asyncio.ensure_future(run_load(self.spec, sink))
        self._task.add_done_callback(self._settle)

    def cancel(self) -> None:
        assert self._task is not None  # `start` was queued first
        self._task.cancel()

    def _add(self, record: RequestRecord) -> None:
        self._batch.append(record)
        if len(self._batch) >= BATCH_MAX:
            self._flush()
        elif self._due is None:
            self._due = asyncio.get_running_loop().call_later(BATCH_S, self._flush)

    def _flush(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if self._batch:
            batch, self._batch = self._batch, []
            self.caller.call_soon_threadsafe(self._deliver, batch)

    def _settle(self, task: asyncio.Task[LoadResult]) -> None:
        self._flush()
        if task.cancelled():
            self.outcome.cancel()
        elif (error := task.exception()) is not None:
            self.outcome.set_exception(error)
        else:
            self.outcome.set_result(task.result())

    # ---- on the caller's loop

    def _deliver(self, batch: list[RequestRecord]) -> None:
        """A sink that fails gets no more records, and `run` raises its error once the load has
        ended: raised in a callback of this loop, it would only be logged."""
        assert self.on_record is not None
        if self.sink_error is not None:
            return
        try:
            for record in batch:
                self.on_record(record)
        except Exception as exc:
            self.sink_error = exc
