"""Tools built on the engine: reports, transferability ranks, benchmarks, plots."""
