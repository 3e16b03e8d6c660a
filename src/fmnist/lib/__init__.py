"""What every part shares, without TensorFlow: params, files and the data set, the process and its machine, data,
metrics, statistics, run records and the sides they compare, experiments, presets, figures, the DVC command line."""
