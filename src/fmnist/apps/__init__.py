"""What users run on a trained model: `fmnist predict`, `fmnist serve`, and the model registry."""
