"""`fmnist seeds` without running DVC: the record it writes and the errors it gives (the real run: test_report)."""

import pytest

from fmnist.lib.errors import PipelineError
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
