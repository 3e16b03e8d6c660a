"""The pipeline's stages: each a thin `main` that dvc.yaml runs as `python -m fmnist.stages.<name>`."""
