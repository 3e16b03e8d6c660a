"""The network and how it runs: building, saving and loading it, precision, distribution."""
