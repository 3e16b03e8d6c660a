"""`python -m fmnist.tools.report`: the formatting functions, the CI workflow that posts it, a real two-commit run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, dvc, git_commit, run, set_param
from fmnist.tools import report

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "pr-report.yml"


# Pure functions.


@pytest.mark.parametrize(
    ("base", "new", "expected"),
    [
        (0.9012, 0.9134, "**Test accuracy: `main` 0.9012 → workspace 0.9134 (+0.0122, better)**"),
        (0.9134, 0.9012, "**Test accuracy: `main` 0.9134 → workspace 0.9012 (-0.0122, worse)**"),
        (0.9012, 0.9012, "**Test accuracy: `main` 0.9012 → workspace 0.9012 (±0.0000, unchanged)**"),
    ],
)
def test_headline_shows_both_values_and_the_signed_delta(base, new, expected):
    assert report.headline("main", base, new) == expected


def test_headline_without_base_accuracy_says_why_and_gives_no_delta():
    line = report.headline("main", None, 0.9012)
    assert line == "**Test accuracy: workspace 0.9012** (no delta: `main` has no metrics/test.json)"
    assert "at `v1`, no test.accuracy" in report.headline("v1", None, 0.9, "at `v1`, no test.accuracy in ...")


def test_signed_rounds_to_one_test_image_and_never_prints_minus_zero():
    assert report.signed(0.00004) == "±0.0000"
    assert report.signed(-0.00004) == "±0.0000"
    assert report.signed(0.0001) == "+0.0001"
    assert report.signed(-0.25) == "-0.2500"


def test_accuracy_from_json_reads_the_evaluate_stage_layout_and_rejects_others():
    assert report.accuracy_from_json('{"test": {"accuracy": 0.875, "loss": 0.3}}') == 0.875
    for text in ('{"accuracy": 0.9}', "not json", '{"test": {"accuracy": "high"}}', '{"test": {"accuracy": true}}'):
        with pytest.raises(ValueError, match=r"test\.accuracy"):
            report.accuracy_from_json(text)


def test_table_or_note_replaces_a_header_only_table():
    header = "| Path | Param | main | workspace |\n|---|---|---|---|\n"
    assert report.table_or_note(header, "No change.") == "_No change._"
    assert report.table_or_note("", "No change.") == "_No change._"
    row = header + "| params.yaml | train.epochs | 1 | 2 |\n"
    assert report.table_or_note(row, "No change.") == row.strip()


def test_parse_ls_tree_and_compare_blobs_find_changed_added_and_removed_files():
    listing = "100644 blob aaa\tplots/confusion.csv\x00100644 blob bbb\tplots/misclassified.png\x00"
    base = report.parse_ls_tree(listing)
    assert base == {"plots/confusion.csv": "aaa", "plots/misclassified.png": "bbb"}
    workspace = {"plots/confusion.csv": "aaa", "plots/misclassified.png": "ccc", "plots/confused_pairs.png": "ddd"}
    assert report.compare_blobs(base, workspace) == {
        "plots/confused_pairs.png": "added",
        "plots/misclassified.png": "changed",
    }
    assert report.compare_blobs(base, {}) == {"plots/confusion.csv": "removed", "plots/misclassified.png": "removed"}


def test_plots_section_names_each_changed_plot_and_the_index():
    changes = {"metrics/train/plots/metrics/eval/loss.tsv": "changed", "plots/confusion.csv": "changed"}
    text = report.plots_section("main", changes, Path("report/plots/index.html"))
    assert "- `metrics/train/plots/metrics/eval/loss.tsv` (training curves): changed" in text
    assert "- `plots/confusion.csv` (confusion matrix): changed" in text
    assert "`report/plots/index.html`" in text
    assert "No plot file differs from `main`" in report.plots_section("main", {}, Path("x/index.html"))


def test_build_report_puts_the_headline_first_then_the_sections_in_order():
    text = report.build_report("**headline**", [("Params", "p-table"), ("Metrics", "m-table")])
    assert text.splitlines()[:3] == [report.TITLE, "", "**headline**"]
    assert text.index("### Params\n\np-table") < text.index("### Metrics\n\nm-table")
    assert text.endswith("m-table\n")


def test_the_cli_parses_defaults_and_options():
    args = report.parse_args([])
    assert (args.base, args.out, args.plots_dir) == ("main", Path("report.md"), Path("report/plots"))
    args = report.parse_args(["--base", "origin/main", "--out", "r.md", "--plots-dir", "p"])
    assert (args.base, args.out, args.plots_dir) == ("origin/main", Path("r.md"), Path("p"))


# The CI workflow.


def workflow() -> dict:
    """The parsed workflow (PyYAML reads the key `on` as True)."""
    return yaml.safe_load(WORKFLOW.read_text())


def step_runs(doc: dict) -> list[str]:
    """The `run:` scripts of the report job, in order."""
    return [step["run"] for step in doc["jobs"]["report"]["steps"] if "run" in step]


def test_workflow_is_valid_yaml_triggered_by_pull_requests_with_comment_permission():
    doc = workflow()
    assert "pull_request" in doc[True]
    assert doc["permissions"]["pull-requests"] == "write"
    steps = doc["jobs"]["report"]["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@") and steps[0]["with"]["fetch-depth"] == 0
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "report/plots"


def test_workflow_reproduces_builds_the_report_and_posts_one_comment():
    doc = workflow()
    script = "\n".join(step_runs(doc))
    assert "apt-get install -y dataset-fashion-mnist" in script
    assert ".github/dvc-remote.sh" in script  # installs the project and the remote's plugin (sweep.yml too)
    assert "pip install -e ." in (REPO_ROOT / ".github/dvc-remote.sh").read_text()
    assert "dvc repro --pull --allow-missing" in script and re.search(r"^\s*dvc repro$", script, re.M)
    assert doc["jobs"]["report"]["env"]["BASE_REF"] == "origin/${{ github.base_ref }}"
    assert 'python -m fmnist.tools.report --base "$BASE_REF"' in script
    assert re.search(
        r"gh pr comment \S+ --edit-last --body-file report\.md \\\s*\|\| gh pr comment \S+ --body-file "
        r"report\.md",
        script,
    )
    comment = next(s for s in doc["jobs"]["report"]["steps"] if "gh pr comment" in s.get("run", ""))
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"


def test_workflow_shell_scripts_parse():
    """Every `run:` script is valid bash once the ${{ }} expressions are replaced."""
    for script in step_runs(workflow()):
        text = re.sub(r"\$\{\{.*?\}\}", "placeholder", script)
        result = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, f"{result.stderr}\n{script}"


# The real thing, on the tiny pipeline.


def report_cli(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m fmnist.tools.report ARGS` in `repo` with the repo's own src/ importable."""
    return run(
        [sys.executable, "-m", "fmnist.tools.report", *args], repo, check=check, env={"PYTHONPATH": str(repo / "src")}
    )


def accuracy_of(repo: Path, rev: str | None = None) -> float:
    """test.accuracy of metrics/test.json in the workspace, or at the git revision `rev`."""
    if rev is None:
        return json.loads((repo / "metrics" / "test.json").read_text())["test"]["accuracy"]
    return json.loads(run(["git", "show", f"{rev}:metrics/test.json"], repo).stdout)["test"]["accuracy"]


@pytest.mark.slow
def test_report_compares_two_commits_whose_metrics_differ(pipeline_copy):
    repo = pipeline_copy
    git_commit(repo, "first run")  # dvc.lock, metrics and plots are git-tracked; models and data are in DVC's cache
    run(["git", "checkout", "-q", "-b", "more-epochs"], repo)
    epochs = yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"]
    set_param(repo, "train", "epochs", epochs + 1)
    dvc(repo, "repro")
    git_commit(repo, "one more epoch")
    base, new = accuracy_of(repo, "main"), accuracy_of(repo)
    assert round(new - base, 4) != 0, "the two commits must differ in accuracy for this test to mean anything"

    result = report_cli(repo, "--base", "main")
    text = (repo / "report.md").read_text()
    delta = f"{new - base:+.4f}"
    assert f"test accuracy {new:.4f} ({delta}) vs main -> report.md" in result.stdout
    lines = text.splitlines()
    assert lines[0] == report.TITLE
    assert lines[2] == (
        f"**Test accuracy: `main` {base:.4f} → workspace {new:.4f} ({delta}, {'better' if new > base else 'worse'})**"
    )
    assert re.search(rf"^\| params\.yaml \| train\.epochs\s+\| {epochs}\s+\| {epochs + 1}\s+\|$", text, re.M)
    assert re.search(rf"^\| metrics/test\.json\s+\| test\.accuracy\s+\| {base:g}\s+\| {new:g}\s+\|", text, re.M)
    assert "- `plots/misclassified.png` (misclassified test images): changed" in text
    assert "(training curves): changed" in text and "(confusion matrix): changed" in text
    index = repo / "report" / "plots" / "index.html"
    assert index.is_file()
    assert (repo / "report" / "plots" / "static" / "main_plots_misclassified.png").is_file()
    assert (repo / "report" / "plots" / "static" / "workspace_plots_misclassified.png").is_file()
    assert run(["git", "status", "--porcelain"], repo).stdout == "", "report.md and report/ must be git-ignored"


@pytest.mark.slow
def test_report_against_a_base_without_metrics_and_an_unknown_base(pipeline_copy):
    repo = pipeline_copy  # HEAD is the pipeline commit before any run: no metrics/test.json there
    report_cli(repo, "--base", "HEAD", "--out", "first.md", "--plots-dir", "first-plots")
    text = (repo / "first.md").read_text()
    assert f"**Test accuracy: workspace {accuracy_of(repo):.4f}** (no delta: `HEAD` has no metrics/test.json)" in text
    assert "(confusion matrix): added" in text
    assert (repo / "first-plots" / "index.html").is_file()

    result = report_cli(repo, "--base", "no-such-branch", "--out", "bad.md", check=False)
    assert result.returncode == 1
    assert result.stderr == "error: unknown base revision 'no-such-branch'; `git fetch` it or pass another --base\n"
    assert not (repo / "bad.md").exists()
