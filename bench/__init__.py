"""The measuring workshop beside the product in src/fmnist: harnesses that measure it, each run from the repository
root as `python -m bench.NAME` (`--help` says more). Never installed; its imports may use the test extra.

    python -m bench.training        train the reference script and presets side by side, timed, in one table
    python -m bench.reference       the reference script: the plain Keras script this project started from
    python -m bench.loadtest        start `fmnist serve` and load it with concurrent clients on loopback
    python -m bench.photos          accuracy and speed of `fmnist predict` on photo-like JPEGs
    python -m bench.unsure_methods  the candidate unsure scores, on validation and the not-garment choose parts
    python -m bench.other_photos    what the served model answers for photos of things that are not garments

bench/cli.py is what they share: their command line, and how their process starts and ends.
"""
