"""fetch from local sources: verification, source resolution, atomic output, the stage's error path."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from fmnist.lib.idx import parse_idx
from fmnist.lib.params import FetchParams
from fmnist.stages import fetch
from tests.helpers import REPO_ROOT, real_data_dir

HANDLE = "zalando-research/fashionmnist/versions/4"


def write_files(directory, contents, compress=False):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def test_plain_and_gzip_directories_give_the_same_bytes(tmp_path, tiny_release):
    contents, table = tiny_release
    plain = fetch.read_verified(write_files(tmp_path / "plain", contents), table)
    zipped = fetch.read_verified(write_files(tmp_path / "gz", contents, compress=True), table)
    assert plain == zipped == contents


def test_files_are_found_in_subdirectories(tmp_path, tiny_release):
    contents, table = tiny_release
    write_files(tmp_path / "bundle" / "nested", contents)
    assert fetch.read_verified(tmp_path / "bundle", table) == contents


def test_a_changed_byte_fails_verification(tmp_path, tiny_release):
    contents, table = tiny_release
    tampered = dict(contents)
    name = "train-labels-idx1-ubyte"
    tampered[name] = tampered[name][:-1] + bytes([(tampered[name][-1] + 1) % 10])
    with pytest.raises(fetch.FetchError, match=f"{name} does not match the original release"):
        fetch.read_verified(write_files(tmp_path, tampered), table)


def test_a_missing_file_names_the_file_and_the_alternatives(tmp_path, tiny_release):
    contents, table = tiny_release
    directory = write_files(tmp_path, {k: v for k, v in contents.items() if k != "t10k-images-idx3-ubyte"})
    with pytest.raises(fetch.FetchError, match=r"t10k-images-idx3-ubyte\[\.gz\] not found .*dataset-fashion-mnist"):
        fetch.read_verified(directory, table)


@pytest.mark.slow
def test_real_debian_copy_verifies_against_the_release_checksums_and_has_the_release_shapes():
    contents = fetch.read_verified(real_data_dir())
    assert list(contents) == [f.name for f in fetch.RELEASE_FILES]
    arrays = {name: parse_idx(data) for name, data in contents.items()}
    assert arrays["train-images-idx3-ubyte"].shape == (60000, 28, 28)
    assert arrays["train-labels-idx1-ubyte"].shape == (60000,)
    assert arrays["t10k-images-idx3-ubyte"].shape == (10000, 28, 28)
    assert np.bincount(arrays["t10k-labels-idx1-ubyte"]).tolist() == [1000] * 10


def test_auto_prefers_the_environment_directory(tmp_path, tiny_release, monkeypatch):
    contents, table = tiny_release
    env_dir = write_files(tmp_path / "env", contents, compress=True)
    monkeypatch.setattr(fetch, "DEBIAN_DIR", tmp_path / "no-debian")
    source, found = fetch.resolve_release(FetchParams("auto", HANDLE), {fetch.DATA_DIR_ENV: str(env_dir)}, table)
    assert source == str(env_dir) and found == contents


def test_auto_skips_a_corrupt_copy_and_uses_the_next(tmp_path, tiny_release, monkeypatch, capsys):
    contents, table = tiny_release
    broken = write_files(tmp_path / "broken", {name: b"\x00\x00\x08\x01" for name in contents})
    debian = write_files(tmp_path / "debian", contents)
    monkeypatch.setattr(fetch, "DEBIAN_DIR", debian)
    source, found = fetch.resolve_release(FetchParams("auto", HANDLE), {fetch.DATA_DIR_ENV: str(broken)}, table)
    assert source == str(debian) and found == contents
    assert f"skipping {broken}" in capsys.readouterr().out


def test_explicit_directory_source(tmp_path, tiny_release):
    contents, table = tiny_release
    directory = write_files(tmp_path / "mine", contents)
    assert fetch.resolve_release(FetchParams(str(directory), HANDLE), {}, table) == (str(directory), contents)
    with pytest.raises(fetch.FetchError, match="is not a directory"):
        fetch.resolve_release(FetchParams(str(tmp_path / "nowhere"), HANDLE), {}, table)


def test_write_release_replaces_the_directory_with_exactly_the_files(tmp_path, tiny_release):
    contents, _ = tiny_release
    target = write_files(tmp_path / "raw", {"stale-file": b"old"})
    fetch.write_release(contents, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(contents)
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary directories left behind


def test_stage_with_a_bad_source_exits_1_with_one_line_and_keeps_data_raw(tmp_path):
    params = (REPO_ROOT / "params.yaml").read_text().replace("source: auto", f"source: {tmp_path / 'nowhere'}")
    (tmp_path / "params.yaml").write_text(params)
    sentinel = tmp_path / "data" / "raw" / "keep-me"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_text("earlier output")
    result = subprocess.run(
        [sys.executable, "-m", "fmnist.stages", "fetch"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "is not a directory" in result.stderr
    assert sentinel.read_text() == "earlier output"
