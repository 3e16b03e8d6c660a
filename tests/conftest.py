"""Shared fixtures: slices of the real data, and throwaway copies of this repository for DVC runs.

Plain helpers (paths, the tiny model, `run`, `dvc`, ...) are in tests/helpers.py.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from fmnist.lib.idx import encode_idx, parse_idx, read_maybe_gzip, sha256_hex
from fmnist.lib.release import RELEASE_FILES, ReleaseFile
from tests.helpers import dvc, make_pipeline_repo, real_data_dir


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
