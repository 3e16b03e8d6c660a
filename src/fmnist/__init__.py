"""Fashion-MNIST classification as a reproducible DVC pipeline: fetch -> prepare -> train -> evaluate -> plot_errors."""

import os

# TensorFlow's C++ start-up lines (oneDNN notice, cpu_feature_guard, absl) would open every stage's output. The
# package is imported before any of its modules, so this runs before TensorFlow loads. Errors still show; set
# TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
