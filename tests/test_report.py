"""`fmnist report`: the formatting functions, the CI workflow that posts it, a real two-commit run."""

import csv
import io
import json
import re
from pathlib import Path

import pytest
import yaml

from fmnist.lib import runs
from fmnist.lib.answers import SplitAnswers
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.stats import VERDICTS
from fmnist.tools import report
from tests.helpers import REPO_ROOT, bf16_env, copy_repo, dvc, fmnist_cli, run, set_param

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
    changes = {
        "metrics/train/plots/metrics/eval/loss.tsv": "changed",
        "answers/test.csv": "changed",
        "plots/confusion.csv": "removed",
    }
    text = report.plots_section("main", changes, Path("report/plots/index.html"))
    assert (
        "- `metrics/train/plots/metrics/eval/loss.tsv` (training curves (and the environment of the run)): changed"
        in text
    )
    assert "- `answers/test.csv` (each test image's answer, and the confusion matrix): changed" in text
    assert "- `plots/confusion.csv` (confusion matrix (before answers/test.csv)): removed" in text
    assert "`report/plots/index.html`" in text
    assert "No plot file differs from `main`" in report.plots_section("main", {}, Path("x/index.html"))


def test_build_report_puts_the_headline_first_then_the_sections_in_order():
    text = report.build_report("**headline**", [("Params", "p-table"), ("Metrics", "m-table")])
    assert text.splitlines()[:3] == [report.TITLE, "", "**headline**"]
    assert text.index("### Params\n\np-table") < text.index("### Metrics\n\nm-table")
    assert text.endswith("m-table\n")


def test_retraining_a_base_reruns_the_stages_its_own_dvc_yaml_has(tmp_path):
    (tmp_path / "dvc.yaml").write_text((REPO_ROOT / "dvc.yaml").read_text())
    assert report.retraining_stages(tmp_path) == ["train", "calibrate", "evaluate"]
    older = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    del older["stages"]["calibrate"]  # a base from before the calibrate stage
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(older))
    assert report.retraining_stages(tmp_path) == ["train", "evaluate"]


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


def accuracy_of(repo: Path, rev: str | None = None) -> float:
    """test.accuracy of metrics/test.json in the workspace, or at the git revision `rev`."""
    if rev is None:
        return json.loads((repo / "metrics" / "test.json").read_text())["accuracy"]
    return json.loads(run(["git", "show", f"{rev}:metrics/test.json"], repo).stdout)["accuracy"]


@pytest.fixture
def seeded_copy(seeded_repo, tmp_path) -> Path:
    return copy_repo(seeded_repo, tmp_path / "repo")


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
        f"**Test accuracy: workspace {accuracy_of(repo):.4f}** (no verdict: `HEAD` has no answers/test.csv (nor the "
        "older plots/confusion.csv)" in text
    )
    assert "- `answers/test.csv` (each test image's answer, and the confusion matrix): added" in text
    assert "### Calibration and unsure answers" not in text  # nothing to compare with
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


# The calibration and unsure answers, on two real commits.


def recorded_test(repo: Path, rev: str | None = None) -> dict:
    """metrics/test.json in the workspace, or at the git revision `rev`."""
    text = (
        (repo / "metrics/test.json").read_text()
        if rev is None
        else run(["git", "show", f"{rev}:metrics/test.json"], repo).stdout
    )
    return json.loads(text)


def set_figures(repo: Path, rev: str | None = None) -> dict[str, dict[str, str]]:
    """plots/not_garments.csv (evaluate's figures per not-garment set) in the workspace or at `rev`: {set: row}."""
    path = "plots/not_garments.csv"
    text = (repo / path).read_text() if rev is None else run(["git", "show", f"{rev}:{path}"], repo).stdout
    return {row["set"]: row for row in csv.DictReader(io.StringIO(text))}


def row_cells(text: str, label: str) -> list[str]:
    """The cells of the report's table row whose first cell starts with `label`."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {label}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def section_of(text: str, heading: str) -> str:
    """The body of the report's `### heading` section."""
    return text.split(f"### {heading}\n\n", 1)[1].split("\n### ", 1)[0].strip()


@pytest.mark.slow
def test_the_calibration_section_compares_both_commits_figures_with_intervals_and_verdicts(reseeded_copy):
    text = section_of(report_on(reseeded_copy), "Calibration and unsure answers")
    base, head = recorded_test(reseeded_copy, "main"), recorded_test(reseeded_copy)
    ece = row_cells(text, "ECE")
    # From each image's answer (its confidence rounded to 4 decimals): evaluate's ECE, to within that rounding.
    assert float(ece[1]) == pytest.approx(base["ece"], abs=0.0005) and float(ece[2]) == pytest.approx(
        head["ece"], abs=0.0005
    )
    for label, key in (("coverage", "coverage"), ("accuracy of the sure answers", "sure_accuracy"), ("NLL", "loss")):
        cells = row_cells(text, label)
        assert cells[1:3] == [f"{base[key]:.4f}", f"{head[key]:.4f}"], label
        low, high = (float(end) for end in cells[4].split(" to "))
        assert low <= float(cells[3]) <= high, label  # the interval holds the difference of the two
    assert row_cells(text, "coverage")[5].startswith("none: near 0.95 is the goal")
    photos = row_cells(text, "photo-like garments")  # no per-image data: as recorded, without an interval
    assert photos[1:3] == [f"{base['photo_sure']:.4f}", f"{head['photo_sure']:.4f}"] and photos[4].startswith("—")
    base_sets, head_sets = set_figures(reseeded_copy, "main"), set_figures(reseeded_copy)
    assert base_sets.keys() == head_sets.keys() and len(base_sets) >= 8
    for name in base_sets:
        unsure = row_cells(text, f"{name}: answered unsure")
        assert unsure[1:3] == [base_sets[name]["unsure"], head_sets[name]["unsure"]], name
    judged = [row_cells(text, label)[5] for label in ("ECE", "NLL", "accuracy of the sure", "photo-like", "digits:")]
    assert set(judged) <= set(VERDICTS)
    # `fmnist seeds --n 2` at main recorded every compared figure, so each has its seed spread there.
    assert "No seed spread" not in text
    if "unsure_score" in SplitAnswers.__dataclass_fields__:  # once fmnist.lib.answers reads the test scores
        for name in base_sets:
            auroc = row_cells(text, f"{name}: AUROC")
            assert float(auroc[1]) == pytest.approx(float(base_sets[name]["auroc"]), abs=0.002), name
    else:
        assert "No AUROC: the test images' unsure scores (answers/test.csv) were not read." in text


def legacy_branch(repo: Path, rev: str = "main") -> str:
    """A branch `legacy` on a commit holding `rev`'s tree as the pipeline left it before answers/: the test
    answers' classes in plots/confusion.csv, no answers/ (made in a separate index: the workspace stays)."""
    confusion = "".join(
        ",".join(line.split(",")[:2]) + "\n"
        for line in run(["git", "show", f"{rev}:answers/test.csv"], repo).stdout.splitlines()
    )
    written = repo.parent / "confusion.csv"
    written.write_text(confusion)
    index = {"GIT_INDEX_FILE": str(repo.parent / "legacy-index")}
    run(["git", "read-tree", rev], repo, env=index)
    run(["git", "rm", "-q", "-r", "--cached", "answers"], repo, env=index)
    blob = run(["git", "hash-object", "-w", str(written)], repo).stdout.strip()
    run(["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},plots/confusion.csv"], repo, env=index)
    tree = run(["git", "write-tree"], repo, env=index).stdout.strip()
    commit = run(["git", "commit-tree", tree, "-p", rev, "-m", "before answers/"], repo).stdout.strip()
    run(["git", "branch", "legacy", commit], repo)
    return "legacy"


@pytest.mark.slow
def test_a_base_from_before_answers_is_compared_on_accuracy_and_says_it_has_no_unsure_answers(reseeded_copy):
    base = legacy_branch(reseeded_copy)
    fmnist_cli(reseeded_copy, "report", "--base", base)
    text = (reseeded_copy / "report.md").read_text()
    assert f"**Test accuracy: `legacy` {accuracy_of(reseeded_copy, 'main'):.4f} → workspace" in text.splitlines()[2]
    calibration = section_of(text, "Calibration and unsure answers")
    assert calibration == (
        "_`legacy` recorded no unsure answers (answers/test.csv without confidence and unsure columns, or only "
        "plots/confusion.csv: a commit from before the calibrate stage), so there is nothing to compare._"
    )
    assert "- `plots/confusion.csv` (confusion matrix (before answers/test.csv)): removed" in text
