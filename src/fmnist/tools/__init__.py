"""The other `fmnist` verbs, one module each: report, seeds, preset, sweep, release, remote.

report_*.py are the report's own parts (the comparison, the calibration section, own images, charts): only the
report's modules import them. What a verb shares with another is in fmnist.lib.
"""
