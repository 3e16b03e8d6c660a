"""Shared test fixtures: slices of the real data, and throwaway copies of this repository for DVC runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fmnist.lib.idx import encode_idx, parse_idx, read_maybe_gzip, sha256_hex
from fmnist.lib.release import RELEASE_FILES, ReleaseFile
from fmnist.stages.fetch import DEBIAN_DIR
from fmnist.tools.presets import deep_merge

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # dvc and python of the environment running the tests

# The real params.yaml shrunk to a run of seconds: tiny network, two epochs, 1,000 training images.
TINY_OVERRIDES = {
    "prepare": {"limit": 1000, "val_fraction": 0.2},
    "model": {"width": 4, "dense_units": 16},
    "train": {"epochs": 2, "batch_size": 32, "warmup_fraction": 0.0},
    "inference": {"tta": "none"},
    "plot_errors": {"n_random": 8, "n_misclassified": 8},
}


def real_data_dir() -> Path:
    """Debian's copy of the original release (.ci/run installs it)."""
    if not all((DEBIAN_DIR / f"{f.name}.gz").is_file() for f in RELEASE_FILES):
        pytest.fail(f"the real data is missing from {DEBIAN_DIR}: apt-get install dataset-fashion-mnist")
    return DEBIAN_DIR


@pytest.fixture(scope="session")
def real_release() -> dict[str, np.ndarray]:
    """The four real release files, decoded: {file name: array}."""
    return {f.name: parse_idx(read_maybe_gzip(real_data_dir() / f"{f.name}.gz")) for f in RELEASE_FILES}


@pytest.fixture(scope="session")
def tiny_release(real_release) -> tuple[dict[str, bytes], tuple[ReleaseFile, ...]]:
    """IDX bytes of the first 300 training and 100 test images of the real data, and their checksum table."""
    counts = {"train": 300, "t10k": 100}
    contents = {name: encode_idx(array[: counts[name.split("-")[0]]]) for name, array in real_release.items()}
    table = tuple(ReleaseFile(name, sha256_hex(data), len(data)) for name, data in contents.items())
    return contents, table


def run(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command with the test environment's tools first on PATH; output captured as text."""
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
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


def dvc(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `dvc ARGS` in `repo`, with the repo's own src/ importable (and `env` added to the environment)."""
    return run(["dvc", *args], repo, check=check, env={"PYTHONPATH": str(repo / "src"), **(env or {})})


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory) -> Path:
    """A tiny pipeline repository after one full `dvc repro` (read-only for tests: copy it to change it)."""
    repo = make_pipeline_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    dvc(repo, "repro")
    return repo


@pytest.fixture
def pipeline_copy(reproduced_repo, tmp_path) -> Path:
    """A private copy of `reproduced_repo` (git history, DVC cache and outputs included)."""
    return Path(shutil.copytree(reproduced_repo, tmp_path / "repo", symlinks=True))
