"""Sharing through a DVC remote, for real and offline: clone A pushes to a local-directory remote, others pull.

DVC 3 stores each object at <remote>/files/md5/<first 2 hex digits>/<other 30>, read-only (0444). What a
corrupted object does on pull depends on the remote's `verify` option and on that mode (see the last tests).
"""

import os
import stat
from pathlib import Path

import pytest
import yaml

from tests.helpers import dvc, git_clone, git_commit, run

pytestmark = pytest.mark.slow

STAGES = ("fetch", "prepare", "train", "evaluate", "plot_errors")
CACHED_OUTS = ("data/raw", "data/prepared", "models/model.keras", "data/predictions/test_probabilities.npy")
MODEL = "models/model.keras"


def contents(repo: Path, out: str) -> dict[str, bytes]:
    """{path relative to `repo`: bytes} of the file `out`, or of every file under the directory `out`."""
    root = repo / out
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in files}


def locked_md5(repo: Path, out: str, rev: str | None = None) -> str:
    """The md5 that dvc.lock records for the output `out`: in the workspace, or at the git revision `rev`."""
    text = (repo / "dvc.lock").read_text() if rev is None else run(["git", "show", f"{rev}:dvc.lock"], repo).stdout
    lock = yaml.safe_load(text)
    return next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == out)


def remote_object(remote: Path, md5: str) -> Path:
    """Where DVC 3 keeps the object with this md5 in a local-directory remote."""
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def corrupt(path: Path, mode: int) -> None:
    """Flip 7 bytes in the middle of `path` (same size, so only a checksum can tell), leaving it at `mode`.

    The damaged copy replaces the file rather than being written into it: another name for the same object (a hard
    link in a test's copy of the DVC cache) keeps the good bytes.
    """
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 7] = bytes(b ^ 0xFF for b in data[middle : middle + 7])
    damaged = path.with_name(path.name + ".damaged")
    damaged.write_bytes(bytes(data))
    os.chmod(damaged, mode)
    os.replace(damaged, path)


@pytest.fixture
def clone_a(pipeline_copy, tmp_path) -> tuple[Path, Path]:
    """(clone A, its remote): the tiny pipeline run, its outputs committed and pushed to a local-directory remote."""
    remote = tmp_path / "remote"
    dvc(pipeline_copy, "remote", "add", "-d", "local", str(remote))
    dvc(pipeline_copy, "remote", "modify", "local", "verify", "true")  # hash what is pulled (docs/remotes.md)
    git_commit(pipeline_copy, "outputs and remote")
    push = dvc(pipeline_copy, "push")
    assert "files pushed" in push.stdout
    return pipeline_copy, remote


def test_a_clone_pulls_everything_and_has_nothing_to_rerun(clone_a, tmp_path):
    repo_a, remote = clone_a
    objects = [p for p in (remote / "files" / "md5").rglob("*") if p.is_file()]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in objects) and objects
    assert remote_object(remote, locked_md5(repo_a, MODEL)).is_file()

    repo_b = git_clone(repo_a, tmp_path / "b")
    assert not (repo_b / MODEL).exists()
    dvc(repo_b, "pull")
    assert dvc(repo_b, "status").stdout.strip() == "Data and pipelines are up to date."
    assert dvc(repo_b, "status", "--cloud").stdout.strip() == "Cache and remote 'local' are in sync."
    repro = dvc(repo_b, "repro").stdout
    assert "Running stage" not in repro
    assert all(f"Stage '{stage}' didn't change, skipping" in repro for stage in STAGES)
    assert "Data and pipelines are up to date." in repro
    assert run(["git", "status", "--porcelain"], repo_b).stdout == ""
    for out in CACHED_OUTS:
        assert contents(repo_b, out) == contents(repo_a, out), out
        assert contents(repo_b, out), out


def test_a_corrupted_object_in_the_remote_fails_the_pull_and_is_not_checked_out(clone_a, tmp_path):
    repo_a, remote = clone_a
    md5 = locked_md5(repo_a, MODEL)
    corrupt(remote_object(remote, md5), 0o444)  # read-only as DVC wrote it: nothing but the checksum tells

    repo_c = git_clone(repo_a, tmp_path / "c")
    pull = dvc(repo_c, "pull", check=False)
    assert pull.returncode == 1
    assert "Checkout failed for following targets:\nmodels/model.keras" in pull.stderr
    assert not (repo_c / MODEL).exists()  # not the corrupted bytes, nothing
    assert not remote_object(repo_c / ".dvc" / "cache", md5).exists()  # DVC hashed it and dropped it
    status = dvc(repo_c, "status").stdout
    assert "not in cache:       models/model.keras" in status
    for out in CACHED_OUTS:
        if out != MODEL:
            assert contents(repo_c, out) == contents(repo_a, out), out  # the intact objects still arrive

    # The repair: delete the bad object from the remote, push again from a clone that has it, pull again.
    remote_object(remote, md5).unlink()
    assert "1 file pushed" in dvc(repo_a, "push").stdout
    dvc(repo_c, "pull")
    assert contents(repo_c, MODEL) == contents(repo_a, MODEL)


def clone_without_verify(clone_a: tuple[Path, Path], tmp_path: Path, mode: int) -> tuple[Path, str]:
    """(a fresh clone with `verify false`, the model's md5) after corrupting the model's object, left at `mode`."""
    repo_a, remote = clone_a
    md5 = locked_md5(repo_a, MODEL)
    corrupt(remote_object(remote, md5), mode)
    repo_c = git_clone(repo_a, tmp_path / "c")
    dvc(repo_c, "remote", "modify", "local", "verify", "false")
    return repo_c, md5


def test_without_verify_a_writable_corrupted_object_is_detected_and_deleted_from_the_remote(clone_a, tmp_path):
    """DVC hashes a local remote's object whose mode is not 0444 before using it, and removes it if it is bad."""
    remote = clone_a[1]
    repo_c, md5 = clone_without_verify(clone_a, tmp_path, 0o644)
    pull = dvc(repo_c, "pull", check=False)
    assert pull.returncode == 1
    assert (
        f"Some of the cache files do not exist neither locally nor on remote. Missing cache files:\nmd5: {md5}"
        in pull.stderr
    )
    assert not (repo_c / MODEL).exists()
    assert not remote_object(remote, md5).exists()


def test_without_verify_a_read_only_corrupted_object_is_used_silently(clone_a, tmp_path):
    """Why docs/remotes.md sets `verify true`: DVC trusts a 0444 object in a local remote without hashing it."""
    repo_a, remote = clone_a
    repo_c, md5 = clone_without_verify(clone_a, tmp_path, 0o444)
    dvc(repo_c, "pull")  # exit status 0
    assert contents(repo_c, MODEL) != contents(repo_a, MODEL)
    assert (repo_c / MODEL).read_bytes() == remote_object(remote, md5).read_bytes()
    assert dvc(repo_c, "status").stdout.strip() == "Data and pipelines are up to date."  # and status cannot tell
