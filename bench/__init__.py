"""`make bench`: the benchmark suite of issue 6 (see docs/benchmarks.md)."""
