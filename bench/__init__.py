"""Benchmark scripts (not tests): run them as ``python bench/<script>.py``; see bench/README.md."""
