"""Atomic writes: a failure midway leaves the earlier output exactly as it was, and no temporary files."""

import numpy as np
import pytest

from fmnist.lib import files


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    files.write_json(target, {"accuracy": 0.9})
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half of a new fi")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_directory_keeps_the_old_directory(tmp_path):
    target = tmp_path / "raw"
    with files.atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), files.atomic_dir(target) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("interrupted")
    assert (target / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_successful_directory_write_replaces_everything(tmp_path):
    target = tmp_path / "raw"
    with files.atomic_dir(target) as tmp:
        (tmp / "old").write_text("x")
    with files.atomic_dir(target) as tmp:
        (tmp / "new").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new"]


def test_npy_refuses_object_arrays(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        files.load_npy(path)
