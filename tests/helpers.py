"""What tests import: paths, a tiny model, and throwaway copies of this repository for DVC runs.

Fixtures live in conftest.py; everything here is a plain constant or function (`from tests.helpers import ...`).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fmnist.lib import dvc_cli
from fmnist.lib.params import ModelParams
from fmnist.lib.release import RELEASE_FILES
from fmnist.stages.fetch import DEBIAN_DIR
from fmnist.tools.presets import deep_merge

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # dvc and python of the environment running the tests

# The smallest network worth building: untrained, it is enough to check everything but accuracy. Tests that need
# augmentation or dropout take a copy: dataclasses.replace(TINY_MODEL, flip=True).
TINY_MODEL = ModelParams(arch="bn_cnn", width=4, dense_units=16, dropout=0.0, flip=False, shift_px=0, precision="auto")

# The real params.yaml shrunk to a run of seconds: tiny network, two epochs, 1,000 training images.
TINY_OVERRIDES = {
    "prepare": {"limit": 1000, "val_fraction": 0.2},
    "model": {"width": TINY_MODEL.width, "dense_units": TINY_MODEL.dense_units},
    "train": {"epochs": 2, "batch_size": 32, "warmup_fraction": 0.0},
    "inference": {"tta": "none"},
    "plot_errors": {"n_random": 8, "n_misclassified": 8},
}


def real_data_dir() -> Path:
    """Debian's copy of the original release (.ci/run installs it)."""
    missing = [f.name for f in RELEASE_FILES if not (DEBIAN_DIR / f"{f.name}.gz").is_file()]
    if missing:
        pytest.fail(f"the real data is missing from {DEBIAN_DIR}: apt-get install dataset-fashion-mnist")
    return DEBIAN_DIR


# --- Commands and throwaway repositories --------------------------------------------------------------------------


def tools_env(env: dict | None = None) -> dict[str, str]:
    """`env` over this environment, with the test environment's tools (dvc, python, gto, fmnist) first on PATH."""
    return {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}


def run(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command with the test environment's tools first on PATH; output captured as text."""
    result = subprocess.run(args, cwd=cwd, env={**os.environ, **tools_env(env)}, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `dvc ARGS` in `repo` (fmnist.lib.dvc_cli), with the repo's own src/ importable and `env` added."""
    result = dvc_cli.dvc(*args, cwd=repo, env=tools_env({"PYTHONPATH": str(repo / "src"), **(env or {})}), check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_pipeline_repo(dest: Path, overrides: dict = TINY_OVERRIDES) -> Path:
    """A fresh git + DVC repository at `dest` holding this project's pipeline with `overrides` applied.

    Run DVC there with `dvc(repo, ...)`, which puts the copied src/ first on PYTHONPATH.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, dest / name)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides), sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.email", "test@example.com"], dest)
    run(["git", "config", "user.name", "test"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    git_commit(dest, "pipeline")
    return dest


def set_param(repo: Path, section: str, key: str, value) -> None:
    """Change one value of `repo`'s params.yaml, as a user editing it would."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def git_commit(repo: Path, message: str) -> None:
    """Stage everything and commit (dvclive needs a commit to exist)."""
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", message], repo)
