"""The Makefile's setup on systems without apt-get (macOS, Fedora, Arch): the data step steps aside."""

import shutil
import subprocess
import sys
from importlib.metadata import distributions

import pytest

from tests.helpers import REPO_ROOT


def make_data(tmp_path, path: str) -> subprocess.CompletedProcess:
    """`make data` as if Debian's dataset package were not installed, with only `path` to find programs on."""
    make = shutil.which("make")
    args = [make, "-s", "-C", str(REPO_ROOT), "data", f"DATA_PACKAGE_DIR={tmp_path / 'not-installed'}"]
    return subprocess.run(args, env={"PATH": path, "HOME": str(tmp_path)}, capture_output=True, text=True)


def test_without_apt_get_the_data_step_says_so_in_one_line_and_succeeds(tmp_path):
    (tmp_path / "bin").mkdir()  # a PATH with no apt-get (and no sudo) on it
    result = make_data(tmp_path, str(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "note: no apt-get here to install Debian's dataset-fashion-mnist, "
        "so fetch will use $FMNIST_DATA_DIR or download from Kaggle"
    ]
    assert result.stderr == ""


def test_when_apt_get_fails_the_data_step_says_so_and_succeeds(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "sudo"):  # whoever runs the test, apt-get itself is the one that fails
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho 'E: Could not open lock file - are you root?' >&2\nexit 100\n")
    (bin_dir / "apt-get").chmod(0o755)
    result = make_data(tmp_path, str(bin_dir))
    assert result.returncode == 0, result.stderr
    assert "note: could not install Debian's dataset-fashion-mnist with apt-get" in result.stdout


def test_the_gpu_setup_installs_the_cuda_build_of_the_installed_tensorflow():
    dry_run = subprocess.run(
        [shutil.which("make"), "-n", "-C", str(REPO_ROOT), "setup-gpu", "SKIP_DATA=1"], capture_output=True, text=True
    )
    assert dry_run.returncode == 0, dry_run.stderr
    [install] = [line for line in dry_run.stdout.splitlines() if "and-cuda" in line]
    installed = {dist.metadata["Name"].lower().replace("_", "-"): dist.version for dist in distributions()}
    tensorflow = installed.get("tensorflow-cpu") or installed["tensorflow"]  # the CPU build on x86-64, else this
    assert install.endswith(f'pip install --quiet "tensorflow[and-cuda]=={tensorflow}"')


@pytest.mark.slow
def test_setup_refuses_a_lock_that_no_longer_matches_pyproject(tmp_path):
    # What .ci/run and every workflow run first: a pin changed without `uv lock` stops it before anything installs.
    for name in ("Makefile", "pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"pyyaml==6.0.3"', '"pyyaml==6.0.2"'))
    setup = subprocess.run(
        [shutil.which("make"), "-C", str(tmp_path), "setup", "SKIP_DATA=1", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
    )
    assert setup.returncode != 0
    message = " ".join(setup.stderr.split())  # uv wraps its lines
    assert "The lockfile at `uv.lock` needs to be updated, but `--locked` was provided" in message
    assert not list(tmp_path.glob(".venv/.synced-*"))  # the next `make setup` tries again
    assert not list(tmp_path.glob(".venv/lib/*/site-packages/yaml"))  # nothing but uv was installed
