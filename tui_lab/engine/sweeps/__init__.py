"""Running a plan: the runner, the adaptive driver, resume, detached runs, the event log
and progress."""
