"""Atomic outputs: write beside the target, then rename, so a failed or interrupted stage leaves the old file."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)  # two renames: the window without `target` is microseconds long
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(target: Path, data: bytes) -> None:
    """Atomically write `data` to `target`."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: Path, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON (stable diffs in git)."""
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_npy(target: Path, array: np.ndarray) -> None:
    """Atomically save one array in .npy format (no pickled objects)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def load_npy(path: Path) -> np.ndarray:
    """Load a .npy array written by this pipeline; object arrays are refused (allow_pickle=False)."""
    return np.load(path, allow_pickle=False)
