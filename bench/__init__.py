"""Benchmarks for fabricd; run them from the repository root (see bench/README.md)."""
