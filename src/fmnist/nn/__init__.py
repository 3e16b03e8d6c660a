"""The network: the model and its file, and inference."""
