"""Fashion-MNIST classification as a reproducible DVC pipeline: fetch -> prepare -> train -> evaluate -> plot_errors."""

import os

from fmnist.lib import tf_notices

# The package is imported before any of its modules, so what follows runs before TensorFlow loads.

# oneDNN's kernels on every x86 CPU, not only where TensorFlow turns them on by default (AVX512-VNNI/BF16, AMX):
# on an AVX2-only CPU they train the default network faster than TensorFlow's Eigen kernels (docs/results.md).
# A user's TF_ENABLE_ONEDNN_OPTS=0 still chooses Eigen. Kernels change the numbers: the stages that run
# TensorFlow list this file as a dependency (dvc.yaml).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# TensorFlow's start-up lines (the oneDNN notice, cpu_feature_guard, Abseil's preamble) would open every stage's
# output and every one-line error; errors still show. TF_CPP_MIN_LOG_LEVEL=0 shows everything (docs/platforms.md).
os.environ.setdefault(tf_notices.LEVEL_VARIABLE, tf_notices.DEFAULT_LEVEL)
tf_notices.hide_import_notices()
