"""bench/training.py, the training bench: its table (mean ± sd over seeds, time ratios to the first row), how it runs
commands, and a preset's run on the tiny pipeline: the train stage, then the accuracy that evaluate reports."""

import json
import sys

import pytest
import yaml

from bench.training import Result, accuracy_cell, parse_seeds, predicted, run_preset, table, timed
from fmnist.lib import files
from fmnist.lib.process import PipelineError


def run(name: str, seed: int, accuracy: float | None, train: float, predict: float = 2.0) -> Result:
    return Result(name, seed, accuracy, train, predict, parameters=1234, epochs=3, compute="CPU eigen, float32")


def test_accuracy_is_the_mean_and_sample_sd_over_seeds_or_a_dash():
    assert accuracy_cell([run("a", 0, 0.93, 1)]) == "0.9300"
    assert accuracy_cell([run("a", 0, 0.93, 1), run("a", 1, 0.95, 2), run("a", 2, 0.94, 3)]) == "0.9400 ± 0.0100"
    assert accuracy_cell([run("reference script", 0, None, 1)]) == "—"  # no validation accuracy of ours to show


def test_table_gives_mean_times_and_ratios_to_the_first_row():
    reference = [run("reference script", 0, 0.90, 98), run("reference script", 1, 0.91, 78)]
    fast = [run("fast", 0, 0.92, 20), run("fast", 1, 0.93, 30)]
    header, _, first, second = table([reference, fast], "test").splitlines()
    assert header.startswith("| run | test accuracy | train + predict (s) | train (s) | predict (s) |")
    assert first.startswith("| reference script | 0.9050 ± 0.0071 | 90 ± 14 | 88 ± 14 | 2.0 ± 0.0 | 1.00x | 0, 1 |")
    assert "| 0.30x |" in second  # 27 s / 90 s: means of both rows
    assert second.endswith("| 1,234 | 3 | CPU eigen, float32 |")


@pytest.mark.parametrize("text", ["", "a,b", "0,0", "-1", "1,,2"])
def test_seeds_must_be_distinct_non_negative_integers(text):
    with pytest.raises(PipelineError, match="--seeds must be distinct integers"):
        parse_seeds(text)
    assert parse_seeds("2,0,1") == [2, 0, 1]


def test_timed_copies_the_output_to_stderr_only_when_asked(tmp_path, capsys):
    say = [sys.executable, "-c", "print('evaluate: test accuracy 0.9343')"]
    seconds, stdout = timed(say, tmp_path, {}, echo=False)
    assert stdout == "evaluate: test accuracy 0.9343\n" and seconds > 0
    assert "test accuracy" not in capsys.readouterr().err  # --split val: no test figure in front of the tuner
    timed(say, tmp_path, {})
    assert "test accuracy 0.9343" in capsys.readouterr().err


def test_a_failing_command_names_itself_and_its_exit_code(tmp_path):
    with pytest.raises(PipelineError, match=r"failed in .* \(exit 3\)"):
        timed([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, {})


@pytest.mark.slow
def test_a_preset_runs_the_train_stage_alone_and_scores_as_evaluate_does(pipeline_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(pipeline_copy)  # where the bench runs: data/raw and data/prepared here
    reported = json.loads(files.TEST_METRICS_FILE.read_text())["accuracy"]  # evaluate's, calibrated
    accuracy, parameters, seconds = predicted(pipeline_copy, "test")  # the committed model, uncalibrated
    assert accuracy == reported and parameters > 0 and seconds > 0
    params = yaml.safe_load(files.PARAMS_FILE.read_text())
    found = run_preset("default", params, 0, "test", tmp_path, {})  # seed 0 again: the committed model again
    assert found.accuracy == reported and found.train_seconds > found.predict_seconds > 0
    workspace = tmp_path / "default-0"
    assert (workspace / files.MODEL_FILE).is_file()
    assert not (workspace / files.CALIBRATION_FILE).exists() and not (workspace / files.TEST_METRICS_FILE).exists()
