"""The library every part shares, free of TensorFlow: params, paths, errors, files, data, metrics, figures."""
