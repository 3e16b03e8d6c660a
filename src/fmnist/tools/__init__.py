"""Tools around the pipeline: report and comparison, seed records, benchmarks, load test, releases, presets, sweeps."""
