"""The network and how it runs: building, saving and loading it, inference, precision, distribution, environment."""
