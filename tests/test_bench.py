"""The benchmark: its table (mean ± sd over seeds, time ratios to the first row) and how it runs commands."""

import sys

import pytest

from fmnist.lib.errors import PipelineError
from fmnist.tools.bench import Result, accuracy_cell, parse_seeds, table, timed


def run(name: str, seed: int, accuracy: float | None, train: float, evaluate: float = 2.0) -> Result:
    return Result(name, seed, accuracy, train, evaluate, parameters=1234, epochs=3, compute="CPU eigen, float32")


def test_accuracy_is_the_mean_and_sample_sd_over_seeds_or_a_dash():
    assert accuracy_cell([run("a", 0, 0.93, 1)]) == "0.9300"
    assert accuracy_cell([run("a", 0, 0.93, 1), run("a", 1, 0.95, 2), run("a", 2, 0.94, 3)]) == "0.9400 ± 0.0100"
    assert accuracy_cell([run("seed script", 0, None, 1)]) == "—"  # no validation accuracy of ours to show


def test_table_gives_mean_times_and_ratios_to_the_first_row():
    seed = [run("seed script", 0, 0.90, 98), run("seed script", 1, 0.91, 78)]
    fast = [run("fast", 0, 0.92, 20), run("fast", 1, 0.93, 30)]
    header, _, first, second = table([seed, fast], "test").splitlines()
    assert header.startswith("| run | test accuracy | train + evaluate (s) |")
    assert first.startswith("| seed script | 0.9050 ± 0.0071 | 90 ± 14 | 88 ± 14 | 2.0 ± 0.0 | 1.00x | 0, 1 |")
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
