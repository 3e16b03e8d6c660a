"""The GitHub workflows, checked statically (they run only on GitHub): actionlint and shellcheck."""

import subprocess

from tests.helpers import REPO_ROOT

LINT = REPO_ROOT / ".ci/lint-workflows"


def lint(*files) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), *map(str, files)], capture_output=True, text=True, timeout=300)


def test_every_workflow_passes_actionlint_and_shellcheck():
    result = lint()
    assert result.returncode == 0, result.stderr
    count = len(list((REPO_ROOT / ".github/workflows").glob("*.yml")))
    assert f"actionlint: {count} workflows, 0 problems" in result.stdout
    assert f"shellcheck: every run script of {count} workflows, 0 with problems" in result.stdout
    assert "shellcheck: .github/*.sh, no problems" in result.stdout  # the scripts the workflows call


STEPS = "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: {}\n"


def test_actionlint_catches_an_unknown_context(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(STEPS.format("echo ${{ github.no_such_property }}"))
    result = lint(broken)
    assert result.returncode == 1 and f"{broken}:6:" in result.stderr and "no_such_property" in result.stderr


def test_shellcheck_catches_an_unquoted_variable_in_a_run_script(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(STEPS.format("rm -rf $TARGET_DIR/*"))
    result = lint(broken)
    assert result.returncode == 1 and "actionlint: 1 workflows, 0 problems" in result.stdout
    assert "SC2086" in result.stderr and "shellcheck: every run script of 1 workflows, 1 with problems" in result.stdout
