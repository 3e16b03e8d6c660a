"""The benchmark's table: medians of repeated runs and ratios to the first row (pure functions, no training)."""

from fmnist.tools.bench import Result, accuracy_cell, median_run, table


def run(name: str, accuracy: float, train: float, evaluate: float = 2.0) -> Result:
    return Result(
        name, accuracy, train, evaluate, predict_seconds=1.0, parameters=1234, epochs=3, compute="CPU, float32"
    )


def test_median_run_picks_the_middle_total_time():
    runs = [run("a", 0.9, 50), run("a", 0.9, 90), run("a", 0.9, 60)]
    assert median_run(runs).train_seconds == 60
    assert median_run(runs[:2]).train_seconds == 50  # even count: the lower middle run
    assert median_run(runs[:1]).train_seconds == 50


def test_accuracy_cell_shows_a_range_only_when_runs_disagree():
    assert accuracy_cell([run("a", 0.93, 1), run("a", 0.93, 2)]) == "0.9300"
    assert accuracy_cell([run("a", 0.93, 1), run("a", 0.95, 2), run("a", 0.94, 3)]) == "0.9400 (median; 0.9300-0.9500)"


def test_table_ratios_are_medians_against_the_first_row():
    seed = [run("seed script", 0.90, 98), run("seed script", 0.90, 78), run("seed script", 0.90, 88)]
    fast = [run("fast", 0.92, 20), run("fast", 0.92, 60), run("fast", 0.92, 28)]
    lines = table([seed, fast]).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| seed script | 0.9000 | 90 | 100, 80, 90 | 88 |")
    assert "| 0.33x |" in lines[3]  # 30 s / 90 s: medians, not the first or the fastest runs
    assert "| 30 | 22, 62, 30 |" in lines[3]
    assert lines[3].endswith("| CPU, float32 |")  # which device and precision each row ran in
