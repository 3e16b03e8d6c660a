"""Shared fixtures: synthetic release files, the real data (slow tests only), and throwaway pipeline repositories.

Plain helpers (paths, the tiny model, `run`, `dvc`, ...) are in tests/helpers.py.
"""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from fmnist.lib.idx import ReleaseFile, parse_idx
from fmnist.lib.process import MIXED_BF16
from fmnist.stages.fetch import read_verified
from tests.helpers import (
    TEST_PRECISION,
    bf16_env,
    copy_repo,
    dvc,
    encoded_release,
    fmnist_cli,
    garment_release,
    git_commit,
    make_pipeline_repo,
    real_data_dir,
    set_param,
)


def pytest_configure(config: pytest.Config) -> None:
    """In a bfloat16 run (`make test-bf16`), oneDNN off where this environment's ONEDNN_MAX_CPU_ISA would make bf16
    abort (tests.helpers.bf16_env): set before any test module loads TensorFlow, and inherited by every process
    the tests start."""
    if TEST_PRECISION == MIXED_BF16:
        os.environ.update(bf16_env())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `pipeline` every test that runs the tiny pipeline (`make test-bf16` runs those in bfloat16)."""
    for item in items:
        if "reproduced_repo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pipeline)


@pytest.fixture(scope="session")
def garments() -> dict[str, np.ndarray]:
    """Four arrays shaped like the release files, {file name: array}: 300 synthetic training and test garments.

    Fast tests use these instead of the real data, so that they run without Debian's data package.
    """
    return garment_release(train=300, test=300)


@pytest.fixture(scope="session")
def tiny_release(garments) -> tuple[dict[str, bytes], tuple[ReleaseFile, ...]]:
    """IDX bytes of the synthetic garments, and their checksum table (a release that fetch can verify)."""
    return encoded_release(garments)


@pytest.fixture(scope="session")
def real_release() -> dict[str, np.ndarray]:
    """The four real release files, decoded: {file name: array}. Slow tests only: needs Debian's data package."""
    return {name: parse_idx(data) for name, data in read_verified(real_data_dir()).items()}


def built_once(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str, build: Callable[[Path], object]
) -> Path:
    """The directory `name`, built by `build(path)` once per test run and shared, read-only, by every test and
    pytest-xdist worker that asks for it: the first to ask builds it under a file lock and renames it into place
    when it is complete (a failed build leaves nothing for the next worker to trip on)."""
    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp if worker_id == "master" else basetemp.parent  # the run's directory, above the workers'
    target = shared / name
    with FileLock(shared / f"{name}.lock"):
        if not target.is_dir():
            building = tmp_path_factory.mktemp(f"building-{name}") / name
            build(building)
            building.rename(target)
    return target


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory, worker_id) -> Path:
    """A tiny pipeline repository after one full `dvc repro` (read-only for tests: copy it to change it)."""
    real_data_dir()  # the fetch stage reads it: say so plainly if it is missing

    def build(repo: Path) -> None:
        make_pipeline_repo(repo)
        dvc(repo, "repro")

    return built_once(tmp_path_factory, worker_id, "reproduced", build)


@pytest.fixture(scope="session")
def seeded_repo(reproduced_repo, tmp_path_factory, worker_id) -> Path:
    """The tiny pipeline committed on main with the seed record of `fmnist seeds --n 2` (read-only: copy it). Its
    run-cache holds the training of seed 1 too."""

    def build(repo: Path) -> None:
        copy_repo(reproduced_repo, repo)
        git_commit(repo, "first run")
        fmnist_cli(repo, "seeds", "--n", "2")  # two runs, the fewest a spread needs
        git_commit(repo, "seed record")

    return built_once(tmp_path_factory, worker_id, "seeded", build)


@pytest.fixture(scope="session")
def reseeded_repo(seeded_repo, tmp_path_factory, worker_id) -> Path:
    """seeded_repo with `train.seed: 1` trained and evaluated in the workspace, not committed (read-only: copy it):
    the head of a change that changes nothing but chance."""

    def build(repo: Path) -> None:
        copy_repo(seeded_repo, repo)
        set_param(repo, "train", "seed", 1)
        dvc(repo, "repro", "train", "evaluate")

    return built_once(tmp_path_factory, worker_id, "reseeded", build)


@pytest.fixture
def pipeline_copy(reproduced_repo, tmp_path) -> Path:
    """A private copy of `reproduced_repo` (git history, DVC cache and outputs included)."""
    return copy_repo(reproduced_repo, tmp_path / "repo")
