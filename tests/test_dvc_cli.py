"""fmnist.lib.dvc_cli: DVC run from Python, its stages in this environment, its failures as DvcError."""

import sys
from pathlib import Path

import pytest

from fmnist.lib import dvc_cli
from tests.helpers import init_git_dvc

pytestmark = pytest.mark.slow  # real `dvc repro` runs (a few seconds each)

STAGE = """stages:
  which:
    cmd: python -c "import sys; print(sys.executable)" > python.txt
    outs: [python.txt]
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC repository with one stage that writes which `python` ran it."""
    init_git_dvc(tmp_path)
    (tmp_path / "dvc.yaml").write_text(STAGE)
    return tmp_path


def test_stage_commands_run_with_this_python_when_path_lacks_its_environment(repo):
    # As when `.venv/bin/fmnist seeds` is started without activating the venv: PATH has only the system's python.
    dvc_cli.dvc("repro", cwd=repo, env={"PATH": "/usr/bin:/bin"})
    assert Path((repo / "python.txt").read_text().strip()).parent == Path(sys.executable).parent


def test_a_failing_command_raises_dvc_error_naming_it_and_dvc_s_last_line(repo):
    with pytest.raises(dvc_cli.DvcError, match=r"^`dvc repro no-such-stage` failed: .*no-such-stage"):
        dvc_cli.dvc("repro", "no-such-stage", cwd=repo)
