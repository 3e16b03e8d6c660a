"""What every part shares, without TensorFlow: params, files, errors, processes, data, metrics, statistics, figures."""
