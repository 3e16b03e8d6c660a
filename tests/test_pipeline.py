"""End to end: the real `dvc repro` on a 1,000-image slice in a throwaway copy of this repository."""

import csv
import io
import json
import zipfile

import pytest
from matplotlib.image import imread

from fmnist.lib import answers
from fmnist.lib.files import CLASS_NAMES
from tests.helpers import DVC_UP_TO_DATE, bf16_env, dvc, git_commit, real_data_dir, run, set_param, stages_run

pytestmark = pytest.mark.slow


def test_repro_builds_every_output(reproduced_repo):
    repo = reproduced_repo
    test = json.loads((repo / "metrics/test.json").read_text())
    assert test["accuracy"] > 0.3  # two epochs of a tiny net on 1,600 images: far above chance (0.1)
    per_class = (repo / "plots/per_class.csv").read_text().splitlines()
    assert len(per_class) == 1 + 2 * len(CLASS_NAMES) and all(
        f"test,{name}," in "\n".join(per_class) for name in CLASS_NAMES
    )
    found = answers.read(lambda path: (repo / path).read_text() if (repo / path).is_file() else None, "test")
    assert found is not None and len(found.actual) == 10_000  # the full test set, however small the slice
    assert found.right.mean() == pytest.approx(test["accuracy"])
    assert found.unsure is not None and found.unsure.mean() == pytest.approx(1 - test["coverage"])
    # Calibrated on validation, the test set's coverage lands near the one asked for (0.95 of 400 validation
    # images: the threshold moves by a few images), and the sure answers are the more accurate ones.
    assert abs(test["coverage"] - 0.95) < 0.05 and test["sure_accuracy"] > test["accuracy"]
    before, served = list(csv.DictReader(io.StringIO((repo / "plots/calibration.csv").read_text())))
    assert float(served["loss"]) == pytest.approx(test["loss"], abs=1e-4)
    assert float(served["loss"]) <= float(before["loss"]) + 0.01  # fitted by that loss, on validation
    for name in ("random_predictions", "misclassified", "confused_pairs", "unsure"):
        assert imread(repo / f"plots/{name}.png")[..., :3].std() > 0.05
    assert (repo / "metrics/train/plots/metrics/eval/accuracy.tsv").read_text().count("\n") == 3  # header + 2 epochs
    assert (repo / "models/model.keras").stat().st_size > 0
    # No `dvc status` here: it writes .dvc/tmp in a repository the other workers copy. test_second_repro_does_nothing
    # checks on a copy that nothing is left to rerun.


def test_second_repro_does_nothing(pipeline_copy):
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == []


def test_plot_errors_param_reruns_only_plot_errors(pipeline_copy):
    set_param(pipeline_copy, "plot_errors", "seed", 11)
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == ["plot_errors"]


def test_train_param_reruns_train_and_everything_that_reads_the_model(pipeline_copy):
    set_param(pipeline_copy, "train", "label_smoothing", 0.0)
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == ["train", "calibrate", "evaluate", "export", "plot_errors"]


def test_retraining_gives_a_byte_identical_model_so_nothing_downstream_reruns(pipeline_copy):
    lock_before = (pipeline_copy / "dvc.lock").read_text()
    assert stages_run(dvc(pipeline_copy, "repro", "--force", "--single-item", "train").stdout) == ["train"]
    assert (pipeline_copy / "dvc.lock").read_text() == lock_before  # same model hash, same metrics
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == []


def test_switching_to_an_equivalent_source_reruns_only_fetch(pipeline_copy):
    set_param(pipeline_copy, "fetch", "source", str(real_data_dir()))
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == ["fetch"]  # same bytes: prepare is up to date


def test_metrics_diff_between_commits_leads_with_the_accuracy_change_in_a_few_rows(pipeline_copy):
    git_commit(pipeline_copy, "plain predictions")
    before = json.loads((pipeline_copy / "metrics/test.json").read_text())["accuracy"]
    set_param(pipeline_copy, "inference", "tta", "flip")  # the same model, other answers: calibrate and evaluate rerun
    dvc(pipeline_copy, "repro", "evaluate")
    git_commit(pipeline_copy, "mirror-averaged predictions")
    after = json.loads((pipeline_copy / "metrics/test.json").read_text())["accuracy"]
    assert after != before
    table = dvc(pipeline_copy, "metrics", "diff", "HEAD~1", "HEAD", "--md").stdout
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    assert len(rows) <= 20  # what a review decides on, not every class's every figure
    assert rows[0][1] == "accuracy"  # whichever file DVC lists first: each one's first figure is its accuracy
    test_row = next(row for row in rows if row[:2] == ["metrics/test.json", "accuracy"])
    # HEAD~1, HEAD and the change, which DVC rounds to 5 decimal places.
    assert [float(cell) for cell in test_row[2:]] == pytest.approx([before, after, after - before], abs=1e-5)


def test_bad_param_fails_before_work_and_checkout_restores_outputs(pipeline_copy):
    git_commit(pipeline_copy, "a good run")  # as a user has it: dvc.lock, metrics and plots committed
    model = (pipeline_copy / "models/model.keras").read_bytes()
    set_param(pipeline_copy, "train", "epochs", "ten")
    result = dvc(pipeline_copy, "repro", check=False)
    assert result.returncode != 0
    assert "error: train.epochs must be an int, got 'ten'" in result.stderr + result.stdout
    assert not (pipeline_copy / "models/model.keras").exists()  # DVC removed the stage's outs before running it
    # The recovery (docs/experiments.md): git restores params and git-tracked outputs, dvc checkout the cached ones.
    run(["git", "checkout", "--", "."], pipeline_copy)
    dvc(pipeline_copy, "checkout")
    assert (pipeline_copy / "models/model.keras").read_bytes() == model
    assert stages_run(dvc(pipeline_copy, "repro").stdout) == []


# oneDNN as on a CPU without AVX512 (most laptops, many cloud VMs and CI runners), and oneDNN off: bf16
# convolutions abort in the first, crawl in the second (tensorflow issues 56153, 61878).
WITHOUT_NATIVE_BF16 = {"onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "onednn_off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


@pytest.mark.parametrize("env", WITHOUT_NATIVE_BF16.values(), ids=WITHOUT_NATIVE_BF16)
def test_default_precision_trains_in_float32_where_bf16_is_not_native(pipeline_copy, env):
    set_param(pipeline_copy, "model", "precision", "auto")
    result = dvc(pipeline_copy, "repro", "--force", "--single-item", "train", env=env)
    assert "precision: float32 (auto: " in result.stdout
    metrics = json.loads((pipeline_copy / "metrics/train/metrics.json").read_text())
    assert metrics["environment"]["precision"] == "float32"
    assert metrics["eval"]["accuracy"] > 0.3  # it trains: validation accuracy far above chance (0.1)


def assert_saved_in_float32_and_evaluates_anywhere(repo) -> None:
    """The workspace's model (trained in bfloat16) has no bfloat16 in its file and evaluates on any CPU."""
    assert json.loads((repo / "metrics/train/metrics.json").read_text())["environment"]["precision"] == "mixed_bfloat16"
    with zipfile.ZipFile(repo / "models/model.keras") as archive:
        assert "bfloat16" not in archive.read("config.json").decode()
    for env in WITHOUT_NATIVE_BF16.values():
        ran = stages_run(dvc(repo, "repro", "--force", "--single-item", "calibrate", "evaluate", env=env).stdout)
        assert ran == ["calibrate", "evaluate"]


def test_a_change_of_precision_is_recorded_with_the_run_and_the_bfloat16_model_evaluates_anywhere(pipeline_copy):
    # The tiny pipeline trains in the suite's precision (tests.helpers.TEST_PRECISION): train in the other, so one
    # of the two models was trained in bfloat16, and check that one before it is replaced or after it is made.
    git_commit(pipeline_copy, "the suite's precision")
    before = json.loads((pipeline_copy / "metrics/train/metrics.json").read_text())["environment"]["precision"]
    after = {"float32": "mixed_bfloat16", "mixed_bfloat16": "float32"}[before]
    if before == "mixed_bfloat16":
        assert_saved_in_float32_and_evaluates_anywhere(pipeline_copy)
    set_param(pipeline_copy, "model", "precision", after)
    dvc(pipeline_copy, "repro", "train", env=bf16_env() if after == "mixed_bfloat16" else None)
    recorded = json.loads((pipeline_copy / "metrics/train/metrics.json").read_text())["environment"]
    assert recorded["precision"] == after  # what `fmnist report` names when the two sides' environments differ
    if after == "mixed_bfloat16":
        assert_saved_in_float32_and_evaluates_anywhere(pipeline_copy)


def test_editing_the_reports_statistics_leaves_train_up_to_date_and_editing_the_model_does_not(pipeline_copy):
    stats = pipeline_copy / "src/fmnist/lib/stats.py"
    stats.write_text(stats.read_text() + "\n# the report's code, which the trained model does not depend on\n")
    assert dvc(pipeline_copy, "status", "train").stdout.strip() == DVC_UP_TO_DATE
    model = pipeline_copy / "src/fmnist/nn/model.py"
    model.write_text(model.read_text() + "\n# the network's code\n")
    assert "src/fmnist/nn/model.py" in dvc(pipeline_copy, "status", "train").stdout
