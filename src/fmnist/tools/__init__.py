"""Tools around the pipeline: benchmark, report, releases, presets, sweeps."""
