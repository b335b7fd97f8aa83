"""Benchmarks (``python -m benchmarks``): each figure next to a reference measured in the same
run."""
