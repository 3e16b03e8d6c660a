"""The pipeline's stages: each a module with a thin `main`, run by dvc.yaml as `python -m fmnist.stages NAME`."""
