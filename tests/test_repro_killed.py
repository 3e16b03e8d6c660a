"""`dvc repro` killed with SIGKILL in the middle of training: the next `dvc repro` finishes without manual clean-up
and records only complete outputs (the power cut, the OOM killer, a cancelled CI job)."""

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import DVC_UP_TO_DATE, VENV_BIN, set_param

pytestmark = pytest.mark.slow

FIRST_EPOCH_TIMEOUT = 300  # seconds until train begins its first epoch (about 15 on 2 idle cores)
COMMAND_TIMEOUT = 600  # seconds for the repro that follows


def lock_outs(repo: Path, stage: str) -> dict[str, str]:
    """{path: md5} of the outputs dvc.lock records for `stage`."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for out in lock["stages"][stage]["outs"]}


def bounded_dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `repo` (its src/ importable), which must succeed within COMMAND_TIMEOUT."""
    result = subprocess.run(
        ["dvc", *args], cwd=repo, env=environment(repo), capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def environment(repo: Path) -> dict[str, str]:
    """The test environment's tools first on PATH, `repo`'s src/ importable, Python's output unbuffered."""
    path = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "PYTHONPATH": str(repo / "src"), "PYTHONUNBUFFERED": "1"}


def kill_at_first_epoch(repo: Path, *args: str) -> list[str]:
    """Start `dvc ARGS` in its own process group and SIGKILL the whole group as soon as a line starts with
    "Epoch 1/" (Keras has begun the first epoch); the lines it printed until then."""
    process = subprocess.Popen(
        ["dvc", *args],
        cwd=repo,
        env=environment(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its group holds DVC and the stage's python: both die at once
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True)
    reader.start()
    printed: list[str] = []
    deadline = time.monotonic() + FIRST_EPOCH_TIMEOUT
    try:
        while not printed or not printed[-1].startswith("Epoch 1/"):
            try:
                printed.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no 'Epoch 1/' line in {FIRST_EPOCH_TIMEOUT} s:\n{''.join(printed)}") from None
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        reader.join(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return printed


def test_repro_killed_while_training_recovers_on_the_next_repro(pipeline_copy):
    repo = pipeline_copy
    before = lock_outs(repo, "train")
    set_param(repo, "train", "seed", 7)  # train (only) must rerun

    printed = kill_at_first_epoch(repo, "repro", "train")
    assert "Running stage 'train':\n" in printed
    assert lock_outs(repo, "train") == before  # nothing recorded for the killed run
    # DVC removed the old model before running the stage; the killed run left no partial one (train saves through
    # a temporary file that replaces the target only when complete)
    assert not list((repo / "models").glob("*model.keras*"))

    repro = bounded_dvc(repo, "repro", "train")  # no clean-up first
    assert "Running stage 'train':" in repro.stdout and "Updating lock file 'dvc.lock'" in repro.stdout
    # DVC notices the dead run's read/write locks and drops them itself
    assert "had been killed. Auto removed it from the lock file." in repro.stderr
    after = lock_outs(repo, "train")
    assert after["models/model.keras"] != before["models/model.keras"]
    assert bounded_dvc(repo, "status", "train").stdout.strip() == DVC_UP_TO_DATE  # the files are what dvc.lock says
