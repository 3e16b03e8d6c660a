"""`fmnist sweep`: parsing and ranking on their own.

The whole fan-out (two runners, a collecting clone, the outputs through a real S3 bucket on loopback) is
tests/test_remote_servers.py's sweep test.
"""

import pytest

from fmnist.lib.errors import PipelineError
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


def show_json(baseline: dict, runs: dict[str, tuple[dict, float | None]]) -> list[dict]:
    """The shape of `dvc exp show --json`: the workspace, then a baseline commit with its experiments."""

    def data(params: dict, accuracy: float | None) -> dict:
        metrics = {} if accuracy is None else {"metrics/test.json": {"data": {"test": {"accuracy": accuracy}}}}
        return {"params": {"params.yaml": {"data": params}}, "metrics": metrics}

    experiments = [{"revs": [{"name": name, "data": data(params, acc)}]} for name, (params, acc) in runs.items()]
    return [
        {"rev": "workspace", "data": data(baseline, 0.5)},
        {"rev": "abc123", "name": "main", "data": data(baseline, 0.5), "experiments": experiments},
    ]


def test_ranking_puts_the_best_first_and_names_what_each_changed():
    base = {"train": {"epochs": 15, "learning_rate": 0.01}, "model": {"width": 16}}
    show = show_json(
        base,
        {
            "s-1": ({"train": {"epochs": 3, "learning_rate": 0.01}, "model": {"width": 16}}, 0.91),
            "s-2": ({"train": {"epochs": 15, "learning_rate": 0.02}, "model": {"width": 24}}, 0.94),
            "s-3": (base, None),  # failed before evaluate
            "other": (base, 0.99),  # not this sweep's
        },
    )
    lines = ranking(show, "s").splitlines()
    assert lines[0] == "| rank | experiment | test.accuracy | params changed |"
    assert lines[2:] == [
        "| 1 | s-2 | 0.9400 | train.learning_rate=0.02, model.width=24 |",
        "| 2 | s-1 | 0.9100 | train.epochs=3 |",
        "| 3 | s-3 | missing | (none) |",
    ]
    with pytest.raises(PipelineError, match="no experiments named t-N"):
        ranking(show, "t")
