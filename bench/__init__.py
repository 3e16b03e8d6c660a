"""The measuring workshop: harnesses that measure the product in src/fmnist, each run as `python -m bench.NAME`."""
