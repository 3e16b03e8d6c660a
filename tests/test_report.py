"""`fmnist report`: the formatting functions, the CI workflow that posts it, a real two-commit run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fmnist.lib import runs
from fmnist.lib.dataset import CLASS_NAMES
from fmnist.tools import report
from tests.helpers import REPO_ROOT, bf16_env, copy_repo, dvc, git_commit, run, set_param

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "pr-report.yml"


# Pure functions.


def test_without_per_image_answers_the_headline_gives_both_accuracies_and_why_there_is_no_verdict():
    line = report.fallback_headline("`main`", 0.9012, 0.9134, "no per-image answers")
    assert line == "**Test accuracy: `main` 0.9012 → workspace 0.9134 (+0.0122)** (no verdict: no per-image answers)"
    assert report.fallback_headline("`v1`", None, 0.9, "why") == "**Test accuracy: workspace 0.9000** (no verdict: why)"


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


# The CI workflow.


def workflow() -> dict:
    """The parsed workflow (PyYAML reads the key `on` as True)."""
    return yaml.safe_load(WORKFLOW.read_text())


def step_runs(doc: dict) -> list[str]:
    """The `run:` scripts of the report job, in order."""
    return [step["run"] for step in doc["jobs"]["report"]["steps"] if "run" in step]


def test_every_pull_request_gets_one_comment_comparing_it_with_its_base_branch():
    doc = workflow()
    steps = doc["jobs"]["report"]["steps"]
    assert "pull_request" in doc[True] and doc["permissions"]["pull-requests"] == "write"
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch's commits, which the report compares with
    assert doc["jobs"]["report"]["env"]["BASE_REF"] == "origin/${{ github.base_ref }}"
    script = "\n".join(step_runs(doc))
    report_args = re.search(r'fmnist report --base "\$BASE_REF" .*--out report\.md --plots-dir (\S+)', script)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert report_args and upload["with"]["path"] == report_args.group(1)  # the plots the report links to
    # One comment per pull request, updated by each push: edit the last one, or create it the first time.
    assert re.search(
        r"gh pr comment (\S+) --edit-last --body-file report\.md \\\s*\|\| gh pr comment \1 --body-file report\.md",
        script,
    )


# The real thing, on the tiny pipeline.


def fmnist_cli(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `fmnist ARGS` in `repo` with the repo's own src/ importable."""
    return run([sys.executable, "-m", "fmnist.cli", *args], repo, check=check, env={"PYTHONPATH": str(repo / "src")})


def accuracy_of(repo: Path, rev: str | None = None) -> float:
    """test.accuracy of metrics/test.json in the workspace, or at the git revision `rev`."""
    if rev is None:
        return json.loads((repo / "metrics" / "test.json").read_text())["test"]["accuracy"]
    return json.loads(run(["git", "show", f"{rev}:metrics/test.json"], repo).stdout)["test"]["accuracy"]


@pytest.fixture(scope="module")
def seeded_repo(reproduced_repo, tmp_path_factory) -> Path:
    """The tiny pipeline committed on main with the seed record of `fmnist seeds --n 2` (read-only: copy it)."""
    repo = copy_repo(reproduced_repo, tmp_path_factory.mktemp("seeded") / "repo")
    git_commit(repo, "first run")
    fmnist_cli(repo, "seeds", "--n", "2")  # two runs, the fewest a spread needs
    git_commit(repo, "seed record")
    return repo


@pytest.fixture
def seeded_copy(seeded_repo, tmp_path) -> Path:
    return copy_repo(seeded_repo, tmp_path / "repo")


@pytest.fixture(scope="module")
def reseeded_repo(seeded_repo, tmp_path_factory) -> Path:
    """seeded_repo with `train.seed: 1` trained and evaluated in the workspace, not committed (read-only: copy it).

    The head of a pull request that changes nothing but chance; two reports compare it with main.
    """
    repo = copy_repo(seeded_repo, tmp_path_factory.mktemp("reseeded") / "repo")
    set_param(repo, "train", "seed", 1)
    dvc(repo, "repro", "train", "evaluate")
    return repo


@pytest.fixture
def reseeded_copy(reseeded_repo, tmp_path) -> Path:
    return copy_repo(reseeded_repo, tmp_path / "repo")


def report_on(repo: Path, *args: str) -> str:
    """Write the report of `repo`'s workspace against main (`args` added); its text."""
    fmnist_cli(repo, "report", "--base", "main", *args)
    return (repo / "report.md").read_text()


def retrained(repo: Path, section: str, key: str, value) -> str:
    """Set one param, retrain and evaluate, then write the report against main; its text."""
    set_param(repo, section, key, value)
    dvc(repo, "repro", "train", "evaluate", env=bf16_env() if value == "mixed_bfloat16" else None)
    return report_on(repo)


@pytest.mark.slow
def test_seeds_records_seeded_runs_of_the_committed_params(seeded_repo):
    record = json.loads((seeded_repo / "metrics/seeds.json").read_text())["seeds"]
    assert [r["seed"] for r in record["runs"]] == [0, 1] and record["n"] == 2
    assert record["runs"][0]["recall"] != record["runs"][1]["recall"]  # another seed, another model
    assert record["runs"][0]["accuracy"] == accuracy_of(seeded_repo)  # seed 0 again, here: the same model
    assert record["fingerprint"] == runs.fingerprint((seeded_repo / "dvc.lock").read_text())
    assert record["environment"]["cpu"] and set(record["runs"][1]["recall"]) == set(CLASS_NAMES)


@pytest.mark.slow
def test_seeds_reuses_its_runs_after_a_commit_that_kept_the_fingerprint(seeded_copy):
    # seeded_repo committed the record after the runs: the experiments now hang off an older commit.
    again = fmnist_cli(seeded_copy, "seeds", "--n", "2").stdout
    assert again.count("ran before, reusing it") == 2 and "seeds: running" not in again
    assert (
        json.loads((seeded_copy / "metrics/seeds.json").read_text())["seeds"]["runs"]
        == json.loads(run(["git", "show", "HEAD:metrics/seeds.json"], seeded_copy).stdout)["seeds"]["runs"]
    )


@pytest.mark.slow
def test_seeds_refuses_params_that_dvc_lock_has_not_measured(seeded_copy):
    set_param(seeded_copy, "train", "epochs", 3)  # not reproduced: dvc.lock's fingerprint is of other params
    result = fmnist_cli(seeded_copy, "seeds", "--n", "2", check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: `dvc status` says train changed since dvc.lock;")
    assert len(result.stderr.splitlines()) == 1 and "seeds: running" not in result.stdout


@pytest.mark.slow
def test_a_change_of_seed_is_within_noise(reseeded_copy):
    text = report_on(reseeded_copy)
    lines = text.splitlines()
    assert lines[0] == report.TITLE and lines[2].endswith(": within noise**")
    assert f"→ workspace {accuracy_of(reseeded_copy):.4f}" in lines[2]
    assert "Seed spread at `main`: " in text and "over 2 seeds;" in text
    assert re.search(r"^\| params\.yaml \| train\.seed\s+\| 0\s+\| 1\s+\|$", text, re.M)
    assert "Different environments" not in text
    assert run(["git", "status", "--porcelain", "--", "report.md", "report"], reseeded_copy).stdout == ""  # ignored


@pytest.mark.slow
def test_a_much_worse_model_is_worse(seeded_copy):
    text = retrained(seeded_copy, "train", "learning_rate", 0.00001)  # barely moves from its random start
    assert text.splitlines()[2].endswith(": worse**"), text[:600]


@pytest.mark.slow
def test_a_head_trained_in_another_precision_opens_with_the_environment_banner(seeded_copy):
    committed = json.loads((seeded_copy / "metrics/train/metrics.json").read_text())["environment"]["precision"]
    other = {"float32": "mixed_bfloat16", "mixed_bfloat16": "float32"}[committed]
    text = retrained(seeded_copy, "model", "precision", other)
    banner = text.splitlines()[2]
    assert banner.startswith("> **Different environments.**") and f"precision {committed} → {other}" in banner


@pytest.mark.slow
def test_report_against_a_base_without_metrics_and_an_unknown_base(pipeline_copy):
    repo = pipeline_copy  # HEAD is the pipeline commit before any run: no metrics or predictions there
    fmnist_cli(repo, "report", "--base", "HEAD", "--out", "first.md", "--plots-dir", "first-plots")
    text = (repo / "first.md").read_text()
    assert (
        f"**Test accuracy: workspace {accuracy_of(repo):.4f}** (no verdict: `HEAD` has no plots/confusion.csv" in text
    )
    assert "(confusion matrix): added" in text
    assert (repo / "first-plots" / "index.html").is_file()

    result = fmnist_cli(repo, "report", "--base", "no-such-branch", "--out", "bad.md", check=False)
    assert result.returncode == 1
    assert result.stderr == "error: unknown base revision 'no-such-branch'; `git fetch` it or pass another --base\n"
    assert not (repo / "bad.md").exists()


@pytest.mark.slow
def test_retrain_base_trains_the_base_again_here_in_a_worktree_and_compares_with_it(reseeded_copy):
    headline = report_on(reseeded_copy, "--retrain-base").splitlines()[2]
    # The same machine as the committed run: the retrained base is the committed model again, image for image.
    assert headline.startswith(
        f"**Test accuracy: `main` (trained in this environment) {accuracy_of(reseeded_copy, 'main'):.4f} → "
        f"workspace {accuracy_of(reseeded_copy):.4f}"
    )
    assert run(["git", "worktree", "list"], reseeded_copy).stdout.count("\n") == 1  # the temporary one is gone
