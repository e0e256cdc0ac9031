"""Benchmarks: `python -m bench.pipeline` (see README, Performance)."""
