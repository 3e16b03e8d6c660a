"""End to end: the real `dvc repro` on a 1,000-image slice in a throwaway copy of this repository."""

import json
import re

import pytest
from matplotlib.image import imread

from fmnist.dataset import CLASS_NAMES
from fmnist.fetch import DEBIAN_DIR
from conftest import dvc, git_commit, run, set_param

pytestmark = pytest.mark.slow


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def test_repro_builds_every_output(reproduced_repo):
    repo = reproduced_repo
    test = json.loads((repo / "metrics/test.json").read_text())["test"]
    assert set(test) == {"loss", "accuracy", "macro_precision", "macro_recall", "macro_f1"}
    assert 0.3 < test["accuracy"] <= 1  # two epochs of a tiny net on 800 images: far above chance (0.1)
    assert set(json.loads((repo / "metrics/per_class.json").read_text())) == set(CLASS_NAMES)
    rows = (repo / "plots/confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 10_001  # the full test set, however small the slice
    for name in ("random_predictions", "misclassified", "confused_pairs"):
        assert imread(repo / f"plots/{name}.png")[..., :3].std() > 0.05
    assert (repo / "metrics/train/plots/metrics/eval/accuracy.tsv").read_text().count("\n") == 3  # header + 2 epochs
    assert (repo / "models/model.keras").stat().st_size > 0
    assert "up to date" in dvc(repo, "status").stdout


def test_second_repro_does_nothing(pipeline_copy):
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == []


def test_plot_errors_param_reruns_only_plot_errors(pipeline_copy):
    set_param(pipeline_copy, "plot_errors", "seed", 11)
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == ["plot_errors"]


def test_train_param_reruns_train_evaluate_and_plot_errors(pipeline_copy):
    set_param(pipeline_copy, "train", "label_smoothing", 0.0)
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == ["train", "evaluate", "plot_errors"]


def test_retraining_gives_a_byte_identical_model_so_nothing_downstream_reruns(pipeline_copy):
    lock_before = (pipeline_copy / "dvc.lock").read_text()
    assert stages_run(dvc(pipeline_copy, "repro", "--force", "--single-item", "train").stdout) == ["train"]
    assert (pipeline_copy / "dvc.lock").read_text() == lock_before  # same model hash, same metrics
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == []


def test_switching_to_an_equivalent_source_reruns_only_fetch(pipeline_copy):
    set_param(pipeline_copy, "fetch", "source", str(DEBIAN_DIR))
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == ["fetch"]  # same bytes: prepare is up to date


def test_metrics_diff_between_commits_shows_the_accuracy_change(pipeline_copy):
    git_commit(pipeline_copy, "two epochs")
    before = json.loads((pipeline_copy / "metrics/test.json").read_text())["test"]["accuracy"]
    set_param(pipeline_copy, "train", "epochs", 4)
    dvc(pipeline_copy, "repro")
    git_commit(pipeline_copy, "four epochs")
    after = json.loads((pipeline_copy / "metrics/test.json").read_text())["test"]["accuracy"]
    assert after != before
    table = dvc(pipeline_copy, "metrics", "diff", "HEAD~1", "HEAD", "--md").stdout
    row = next(line for line in table.splitlines() if "test.accuracy" in line)
    assert f"{before:.5g}"[:5] in row and f"{after:.5g}"[:5] in row and f"{after - before:.5g}"[:5] in row


def test_bad_param_fails_before_work_and_checkout_restores_outputs(pipeline_copy):
    git_commit(pipeline_copy, "a good run")  # as a user has it: dvc.lock, metrics and plots committed
    model = (pipeline_copy / "models/model.keras").read_bytes()
    set_param(pipeline_copy, "train", "epochs", "ten")
    result = dvc(pipeline_copy, "repro", check=False)
    assert result.returncode != 0
    assert "error: train.epochs must be an int, got 'ten'" in result.stderr + result.stdout
    assert not (pipeline_copy / "models/model.keras").exists()  # DVC removed the stage's outs before running it
    # The README's recovery: git restores params and the git-tracked outputs, dvc checkout the cached ones.
    run(["git", "checkout", "--", "."], pipeline_copy)
    dvc(pipeline_copy, "checkout")
    assert (pipeline_copy / "models/model.keras").read_bytes() == model
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == []
