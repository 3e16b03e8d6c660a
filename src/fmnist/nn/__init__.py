"""The network and where it runs: the model and its file, inference, the machine and its precision, distribution."""
