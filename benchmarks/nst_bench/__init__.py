"""nst benchmarks."""
