"""Benchmarks of issue 6, run together by `./lab bench` (benchmarks/run_all.py)."""
