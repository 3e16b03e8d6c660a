"""`fmnist sweep`: parsing and ranking on their own, then the whole fan-out offline, as the sweep workflow does it.

The fan-out test stands in for GitHub: a bare git repository is `origin`, a local directory the DVC remote, and
three clones are two runners and the collecting job.
"""

import json
from pathlib import Path

import pytest

from fmnist.lib.errors import PipelineError
from fmnist.tools.sweep import check_prefix, parse_sets, parse_worker, ranking, share
from tests.helpers import dvc, git_clone, git_commit, run


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


def fmnist(repo: Path, *args: str) -> str:
    """Run the `fmnist` command of `repo`'s own code there; its stdout."""
    return run(["python", "-m", "fmnist.cli", *args], repo, env={"PYTHONPATH": str(repo / "src")}).stdout


def clone(origin: Path, dest: Path) -> Path:
    """A runner's checkout: `git clone` of origin, with a git identity for the experiments' commits."""
    git_clone(origin, dest)
    run(["git", "config", "user.email", "runner@example.com"], dest)
    run(["git", "config", "user.name", "runner"], dest)
    return dest


@pytest.mark.slow
def test_two_runners_share_experiments_and_a_third_clone_collects_and_applies_the_best(pipeline_copy, tmp_path):
    origin, storage = tmp_path / "origin.git", tmp_path / "storage"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)  # clones check out main
    dvc(pipeline_copy, "remote", "add", "-d", "storage", str(storage))
    git_commit(pipeline_copy, "tiny pipeline, its outputs and the DVC remote")
    dvc(pipeline_copy, "push")
    run(["git", "remote", "add", "origin", str(origin)], pipeline_copy)
    run(["git", "push", "-q", "origin", "main"], pipeline_copy)

    # Overrides that need no training: each runner reruns only the stages its set changes (plot_errors; evaluate,
    # export and plot_errors), and the two sets reach different accuracies.
    sets = json.dumps([["plot_errors.seed=1"], ["inference.tta=flip", "plot_errors.n_random=4"]])
    for number in (1, 2):  # each runner: a fresh clone, its share of the sets, pushed
        runner = clone(origin, tmp_path / f"runner{number}")
        out = fmnist(runner, "sweep", "run", "--sets", sets, "--prefix", "t", "--worker", f"{number}/2")
        assert f"sweep: ran and pushed t-{number}" in out
        assert run(["git", "status", "--porcelain"], runner).stdout == ""  # --temp left the workspace alone

    collector = clone(origin, tmp_path / "collector")
    table = fmnist(collector, "sweep", "collect", "--prefix", "t").splitlines()  # stdout: the table alone
    assert table[0].startswith("| rank | experiment |"), table
    ranked = [line.split(" | ")[1] for line in table[2:]]
    assert sorted(ranked) == ["t-1", "t-2"], table
    assert "plot_errors.seed=1" in next(line for line in table if "t-1" in line)
    assert "inference.tta=flip, plot_errors.n_random=4" in next(line for line in table if "t-2" in line)
    listed = dvc(collector, "exp", "show", "--csv").stdout.splitlines()  # DVC's own view lists both, with metrics
    header = listed[0].split(",")
    rows = {line.split(",")[header.index("Experiment")]: line.split(",") for line in listed[1:]}
    assert {"t-1", "t-2"} <= set(rows)
    ranked_accuracy = {line.split(" | ")[1]: float(line.split(" | ")[2]) for line in table[2:]}
    for name in ("t-1", "t-2"):  # the table's numbers are DVC's
        assert float(rows[name][header.index("test.accuracy")]) == pytest.approx(ranked_accuracy[name], abs=1e-4)

    best = ranked[0]
    best_accuracy = float(table[2].split(" | ")[2])
    dvc(collector, "exp", "apply", best)
    dvc(collector, "pull")  # the best experiment's outputs, from the DVC remote
    assert "Data and pipelines are up to date" in dvc(collector, "status").stdout
    metrics = json.loads((collector / "metrics" / "test.json").read_text())
    assert round(metrics["test"]["accuracy"], 4) == best_accuracy
    assert (collector / "models" / "model.keras").is_file()
