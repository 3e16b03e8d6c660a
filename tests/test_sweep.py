"""`fmnist sweep`: parsing and ranking on their own.

The whole fan-out (two runners, a collecting clone, the outputs through a real S3 bucket on loopback) is
tests/test_remote_servers.py's sweep test.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from fmnist.lib import answers, files
from fmnist.lib.answers import Answers
from fmnist.lib.process import PipelineError
from fmnist.tools.sweep import check_prefix, parse_sets, parse_worker, ranking, share


def test_sets_are_a_json_list_of_override_lists():
    assert parse_sets('[["train.epochs=3"], ["model.width=8", "train.seed=1"]]') == [
        ["train.epochs=3"],
        ["model.width=8", "train.seed=1"],
    ]
    for bad in ("train.epochs=3", "[]", '["train.epochs=3"]', "[[]]", '[["epochs"]]', "[[3]]"):
        with pytest.raises(PipelineError, match="--sets"):
            parse_sets(bad)


def test_workers_split_the_sets_between_them_without_overlap():
    assert parse_worker("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(PipelineError, match="--worker must be K/N"):
            parse_worker(bad)
    sets = [["train.seed=0"]] * 5
    shares = [share(sets, number, 3) for number in (1, 2, 3)]
    assert shares == [[0, 3], [1, 4], [2]]
    assert share(sets, 1, 1) == [0, 1, 2, 3, 4] and share(sets[:1], 2, 2) == []


def test_the_prefix_must_be_able_to_start_a_git_ref_name():
    assert check_prefix("lr-sweep.2") == "lr-sweep.2"
    for bad in ("", "-x", "a b", "a/b", "a..b", "a~1"):
        with pytest.raises(PipelineError, match="--prefix"):
            check_prefix(bad)


def answers_csv(right: np.ndarray) -> str:
    """answers/val.csv of a model that gets the images of `right` right (every true class: T-shirt/top), as the
    evaluate stage writes it."""
    probabilities = np.eye(10)[np.where(right, 0, 1)]
    return answers.split_csv(
        np.zeros(len(right), int), Answers(probabilities, np.zeros(len(right)), np.zeros(len(right), bool))
    )


def legacy_csv(right: np.ndarray) -> str:
    """plots/val_confusion.csv, what a commit from before answers/ recorded: the classes only."""
    rows = [f"T-shirt/top,{'T-shirt/top' if r else 'Trouser'}" for r in right]
    return "actual,predicted\n" + "\n".join(rows) + "\n"


def show_json(baseline: dict, runs: dict[str, tuple[dict, float | None, float]]) -> list[dict]:
    """The shape of `dvc exp show --json`: the workspace, then a baseline commit with its experiments, each with
    its params, validation accuracy (None: no metrics/val.json) and test accuracy."""

    def data(params: dict, val: float | None, test: float) -> dict:
        metrics = {"metrics/test.json": {"data": {"test": {"accuracy": test}}}}
        if val is not None:
            metrics["metrics/val.json"] = {"data": {"val": {"accuracy": val}}}
        return {"params": {"params.yaml": {"data": params}}, "metrics": metrics}

    experiments = [{"revs": [{"name": name, "rev": f"rev-{name}", "data": data(*run)}]} for name, run in runs.items()]
    return [
        {"rev": "workspace", "data": data(baseline, 0.5, 0.5)},
        {"rev": "base", "name": "main", "data": data(baseline, 0.5, 0.5), "experiments": experiments},
    ]


BASE = {"train": {"epochs": 15, "learning_rate": 0.01}, "model": {"width": 16}}
SEEDS = json.dumps({"seeds": {"runs": [{"val_accuracy": a, "accuracy": 0.93} for a in (0.934, 0.938, 0.936)]}})


def test_the_ranking_chooses_on_validation_and_says_who_is_as_good_a_choice():
    rng = np.random.default_rng(0)
    best = rng.random(6000) < 0.94  # which validation images each candidate gets right
    close = best.copy()
    close[np.flatnonzero(best)[:12]] = False  # 12 images fewer: 0.002 below, what seeds alone move it
    poor = rng.random(6000) < 0.85
    # s-1 ran before answers/ existed: its commit holds only plots/val_confusion.csv.
    files_at = {
        ("rev-s-2", answers.SPLIT_FILES["val"]): answers_csv(best),
        ("rev-s-1", answers.LEGACY_FILES["val"]): legacy_csv(close),
        ("rev-s-3", answers.SPLIT_FILES["val"]): answers_csv(poor),
        ("base", files.SEEDS_FILE): SEEDS,
    }
    show = show_json(
        BASE,
        {
            "s-1": ({"train": {"epochs": 3, "learning_rate": 0.01}, "model": {"width": 16}}, close.mean(), 0.99),
            "s-2": ({"train": {"epochs": 15, "learning_rate": 0.02}, "model": {"width": 24}}, best.mean(), 0.93),
            "s-3": (BASE, poor.mean(), 0.999),  # the best test accuracy, and no say in the choice
            "other": (BASE, 0.99, 0.99),  # not this sweep's
        },
    )

    def read_at(rev: str, path: Path) -> str | None:
        return files_at.get((rev, path))

    lines = ranking(show, "s", read_at).splitlines()
    assert lines[0] == "| rank | experiment | val accuracy | against the best | params changed |"
    assert lines[2] == f"| 1 | s-2 | {best.mean():.4f} | best | train.learning_rate=0.02, model.width=24 |"
    assert lines[3] == f"| 2 | s-1 | {close.mean():.4f} | within noise | train.epochs=3 |"
    assert lines[4] == f"| 3 | s-3 | {poor.mean():.4f} | worse | (none) |"
    assert lines[6].startswith("Chosen on validation: s-2;") and "±0.0057 from metrics/seeds.json" in lines[6]
    assert lines[7] == "Its test accuracy, for the record and not to choose by: 0.9300."
    assert "0.9990" not in "\n".join(lines)  # no other test accuracy is shown
    with pytest.raises(PipelineError, match="no experiments named t-N"):
        ranking(show, "t", read_at)
    del files_at[("rev-s-3", answers.SPLIT_FILES["val"])]  # an experiment without answers: no verdict on it
    assert ranking(show, "s", read_at).splitlines()[4].endswith("| no verdict (no answers/val.csv) | (none) |")
    files_at[("rev-s-3", answers.SPLIT_FILES["val"])] = "actual,predicted\nHat,Bag\n"
    with pytest.raises(PipelineError, match=r"^experiment s-3: answers/val.csv has a row that does not start"):
        ranking(show, "s", read_at)


def test_a_sweep_without_validation_metrics_is_one_line_naming_the_experiment():
    show = show_json(BASE, {"s-1": (BASE, 0.93, 0.93), "s-2": (BASE, None, 0.93)})
    with pytest.raises(PipelineError, match=r"^experiment s-2 has no metrics/val.json \(validation metrics\)"):
        ranking(show, "s", lambda rev, path: None)
