"""Speed figures for charrnn, each next to a bare PyTorch reference: ``python -m benchmarks``."""
