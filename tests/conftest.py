"""Shared fixtures: synthetic release files, the real data (slow tests only), and throwaway pipeline repositories.

Plain helpers (paths, the tiny model, `run`, `dvc`, ...) are in tests/helpers.py.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from fmnist.lib.idx import ReleaseFile, parse_idx
from fmnist.nn.machine import MIXED_BF16
from fmnist.stages.fetch import read_verified
from tests.helpers import (
    TEST_PRECISION,
    bf16_env,
    copy_repo,
    dvc,
    encoded_release,
    garment_release,
    make_pipeline_repo,
    real_data_dir,
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


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory, worker_id) -> Path:
    """A tiny pipeline repository after one full `dvc repro` (read-only for tests: copy it to change it).

    Built once per test run: pytest-xdist's workers share it, the first to ask builds it under a file lock and
    renames it into place when it is complete (a failed build leaves nothing for the next worker to trip on).
    """
    real_data_dir()  # the fetch stage reads it: say so plainly if it is missing
    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp if worker_id == "master" else basetemp.parent  # the run's directory, above the workers'
    repo = shared / "reproduced"
    with FileLock(shared / "reproduced.lock"):
        if not repo.is_dir():
            building = make_pipeline_repo(tmp_path_factory.mktemp("building"))
            dvc(building, "repro")
            building.rename(repo)
    return repo


@pytest.fixture
def pipeline_copy(reproduced_repo, tmp_path) -> Path:
    """A private copy of `reproduced_repo` (git history, DVC cache and outputs included)."""
    return copy_repo(reproduced_repo, tmp_path / "repo")
