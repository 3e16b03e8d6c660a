"""Fashion-MNIST classification as a reproducible DVC pipeline: fetch -> prepare -> train -> evaluate -> plot_errors."""
