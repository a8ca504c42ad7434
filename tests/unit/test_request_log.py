"""Finished requests counted from a llama-server log as it grows, line by line."""

from __future__ import annotations

from pathlib import Path

from tui_lab.engine.load.request_log import RequestLogCounter

TIMING = (
    "0.02.023.046 I slot print_timing: id  0 | task {t} |       total time =     222.59 ms /"
    "    33 tokens\n"
)
OTHER = "0.02.023.033 I slot print_timing: id  0 | task 0 | prompt eval time =  147.84 ms\n"


def test_counts_only_whole_finished_request_lines_as_the_log_grows(tmp_path: Path) -> None:
    log = tmp_path / "llama-server-0.log"
    counter = RequestLogCounter()
    assert counter.count(log) is None  # not there yet: unknown, not 0
    log.write_text("main: server is listening\n" + OTHER)
    assert counter.count(log) == 0
    line = TIMING.format(t=1)
    with log.open("a") as fh:
        fh.write(OTHER + TIMING.format(t=0) + line[:30])  # the last line half written
    assert counter.count(log) == 1
    with log.open("a") as fh:
        fh.write(line[30:] + TIMING.format(t=2))
    assert counter.count(log) == 3
    assert counter.count(log) == 3  # nothing new, nothing counted twice


def test_forgotten_logs_start_over(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(TIMING.format(t=0) * 2)
    counter = RequestLogCounter()
    assert counter.count(log) == 2
    counter.keep_only(set())
    assert counter.count(log) == 2
