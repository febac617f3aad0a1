"""Benchmark scenarios for `cairn bench` (see docs/benchmarks.md)."""
