"""Benchmarks and soak runs against a real gateway and the local Launch server (e.g. `python -m bench.soak`)."""
