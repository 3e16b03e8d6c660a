"""Fashion-MNIST classification as a reproducible DVC pipeline: fetch -> prepare -> train -> evaluate -> plot_errors."""

import os

from fmnist.lib import tf_notices

# TensorFlow's start-up lines (the oneDNN notice, cpu_feature_guard, Abseil's preamble) would open every stage's
# output and every one-line error. The package is imported before any of its modules, so this runs before
# TensorFlow loads; errors still show. TF_CPP_MIN_LOG_LEVEL=0 shows everything (docs/platforms.md).
os.environ.setdefault(tf_notices.LEVEL_VARIABLE, tf_notices.DEFAULT_LEVEL)
tf_notices.hide_import_notices()
