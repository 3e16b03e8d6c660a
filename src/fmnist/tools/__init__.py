"""Tools around the pipeline: report and charts, seeds, benchmarks, load test, releases, presets, sweeps, remotes."""
