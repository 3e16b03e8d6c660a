"""`fmnist seeds` without running DVC: the record it writes and the errors it gives (the real run: test_report)."""

import statistics
from pathlib import Path

import numpy as np
import pytest

from fmnist.lib import answers, files, runs
from fmnist.lib.answers import Answers
from fmnist.lib.process import PipelineError
from fmnist.tools import seeds


def result(accuracy: float, cpu: str = "AMD EPYC") -> dict:
    """metrics_of(...) for one run; its validation accuracy a little above its test accuracy."""
    return {
        "accuracy": accuracy,
        "val_accuracy": accuracy + 0.005,
        "recall": {"Bag": accuracy},
        "environment": {"cpu": cpu},
    }


def test_the_record_has_each_run_and_their_mean_and_sample_sd():
    names = {0: "seed0-abc", 1: "seed1-abc", 2: "seed2-abc"}
    found = seeds.record({2: result(0.92), 0: result(0.94), 1: result(0.93)}, names, "abc", "1234")["seeds"]
    assert [run["seed"] for run in found["runs"]] == [0, 1, 2] and found["runs"][0]["experiment"] == "seed0-abc"
    assert (found["n"], found["min"], found["max"]) == (3, 0.92, 0.94)
    assert found["mean"] == pytest.approx(0.93) and found["sd"] == pytest.approx(0.01)
    assert found["val_mean"] == pytest.approx(0.935) and found["val_sd"] == pytest.approx(0.01)
    assert [run["val_accuracy"] for run in found["runs"]] == pytest.approx([0.945, 0.935, 0.925])
    assert found["environment"] == {"cpu": "AMD EPYC"} and (found["fingerprint"], found["commit"]) == ("abc", "1234")


def test_runs_from_different_machines_are_marked_mixed():
    found = seeds.record({0: result(0.93), 1: result(0.94, cpu="Intel Xeon")}, {0: "a", 1: "b"}, "f", "c")["seeds"]
    assert found["environment"] == "mixed"


def test_one_seed_is_refused_and_so_is_a_workspace_without_dvc_lock(tmp_path, monkeypatch):
    with pytest.raises(PipelineError, match="--n must be at least 2"):
        seeds.run_seeds(1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"dvc\.lock is missing; run `dvc repro` first"):
        seeds.run_seeds(3)


def with_figures(accuracy: float, ece: float, digits_unsure: float) -> dict:
    """result() with the figures of calibration and unsure answers that metrics_of reads from a run of today's code."""
    figures = {"ece": ece, "loss": 0.2, "coverage": 0.95, "sure_accuracy": 0.95, "photo_sure": 0.94}
    return {**result(accuracy), **figures, "worst_auroc": 0.98, "not_garments": {"digits": {"unsure": digits_unsure}}}


def test_the_record_keeps_each_runs_calibration_figures_and_their_spread_for_the_report():
    results = {0: with_figures(0.93, 0.016, 0.95), 1: with_figures(0.94, 0.020, 0.97)}
    record = seeds.record(results, {0: "a", 1: "b"}, "f", "c")
    found = record["seeds"]
    assert found["runs"][1]["ece"] == 0.020 and found["runs"][0]["not_garments"] == {"digits": {"unsure": 0.95}}
    assert found["figures"]["ece"] == {
        "mean": pytest.approx(0.018),
        "sd": pytest.approx(statistics.stdev([0.016, 0.02])),
    }
    assert set(found["figures"]) == set(seeds.FIGURES)
    # What the report reads of it: the spread of each figure, the not-garment sets' included.
    assert runs.seed_sd(record, "ece") == pytest.approx(found["figures"]["ece"]["sd"])
    assert runs.seed_sd(record, "not_garments", "digits", "unsure") == pytest.approx(statistics.stdev([0.95, 0.97]))


def test_a_figure_that_one_run_lacks_gets_no_spread():
    results = {0: with_figures(0.93, 0.016, 0.95), 1: result(0.94)}  # seed 1 ran older code
    found = seeds.record(results, {0: "a", 1: "b"}, "f", "c")["seeds"]
    assert found["figures"] == {} and "ece" not in found["runs"][1]
    assert runs.seed_sd({"seeds": found}, "ece") is None


def experiment(test: dict) -> dict:
    """An experiment's `dvc exp show --json` data: its metrics files."""
    return {"metrics": {"metrics/test.json": {"data": test}, "metrics/val.json": {"data": {"accuracy": 0.94}}}}


def test_a_runs_figures_come_from_its_metrics_and_its_answers():
    test = {
        **{"accuracy": 0.5, "ece": 0.02, "loss": 0.3, "coverage": 0.5, "sure_accuracy": 1.0, "photo_sure": 0.8},
        **{"worst_auroc": 0.97, "worst_unsure": 0.9},
    }
    labels, probabilities = np.array([0, 1]), np.eye(10)[[0, 0]]
    letters = (np.array([0.5, 3.0, 1.0]), np.array([False, True, True]), 1)  # and one refused photo
    committed = {
        answers.SPLIT_FILES["test"]: answers.split_csv(
            labels, Answers(probabilities, np.array([0.1, 2.0]), np.array([0, 1]))
        ),
        files.NOT_GARMENTS_ANSWERS_FILE: answers.not_garments_csv({"letters": letters}),
        files.TRAIN_METRICS_FILE: '{"environment": {"cpu": "AMD EPYC"}}',
    }
    found = seeds.metrics_of(experiment(test), committed.get)
    assert {key: found[key] for key in seeds.FIGURES} == {key: test[key] for key in seeds.FIGURES}
    assert found["accuracy"] == 0.5 and found["environment"] == {"cpu": "AMD EPYC"}
    assert found["recall"] == {"T-shirt/top": 1.0, "Trouser": 0.0}  # from the answers: both called T-shirt/top
    assert found["not_garments"]["letters"]["unsure"] == pytest.approx(3 / 4)  # the refused photo is unsure
    older = seeds.metrics_of(experiment({"accuracy": 0.5}), {Path("plots/confusion.csv"): "actual,predicted\n"}.get)
    assert set(older) == {"val_accuracy", "accuracy", "recall", "environment"} and older["environment"] is None
