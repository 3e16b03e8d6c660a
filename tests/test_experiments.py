"""DVC experiments on the tiny pipeline: `dvc exp run -S`, `dvc exp show --json`, a mistyped key, a queued sweep."""

import json
import time
from pathlib import Path

import pytest
import yaml

from fmnist.lib import experiments as dvc_experiments
from tests.helpers import dvc, git_commit, run

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT_S = 300


def experiments(repo: Path) -> dict[str, dict]:
    """{name: data} of every experiment in `repo`'s `dvc exp show --json`, read as `fmnist sweep collect` reads it."""
    found = dvc_experiments.with_revs(json.loads(dvc(repo, "exp", "show", "--json").stdout))
    return {name: data for name, (_, data) in found.items()}


def exp_params(data: dict) -> dict:
    """The params.yaml values an experiment ran with."""
    return data["params"]["params.yaml"]["data"]


def exp_accuracy(data: dict) -> float:
    """The test accuracy an experiment reached (metrics/test.json)."""
    return data["metrics"]["metrics/test.json"]["data"]["accuracy"]


def committed(repo: Path) -> dict:
    """Commit the run's outputs (experiments start from a commit) and return the params it ran with."""
    git_commit(repo, "baseline run")
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_exp_run_with_set_param_is_listed_with_its_params_and_metrics(pipeline_copy):
    repo = pipeline_copy
    baseline = committed(repo)
    baseline_accuracy = json.loads((repo / "metrics" / "test.json").read_text())["accuracy"]
    assert (baseline["inference"]["tta"], baseline["inference"]["batch_size"]) != ("flip", 500)

    # Mirror-averaged predictions of the committed model: evaluate alone reruns, no training.
    sets = ("-S", "inference.tta=flip", "-S", "inference.batch_size=500")
    result = dvc(repo, "exp", "run", "-n", "mirrored", *sets, "evaluate")
    assert "Ran experiment(s): mirrored" in result.stdout
    found = dict(experiments(repo))
    assert list(found) == ["mirrored"]
    params = exp_params(found["mirrored"])
    assert (params["inference"]["tta"], params["inference"]["batch_size"]) == ("flip", 500)
    assert params["model"] == baseline["model"] and params["train"] == baseline["train"]  # the rest as committed
    accuracy = exp_accuracy(found["mirrored"])
    assert accuracy != baseline_accuracy  # evaluated with its own params: other answers
    # `dvc exp run` leaves the experiment's results in the workspace: the same numbers as listed.
    assert json.loads((repo / "metrics" / "test.json").read_text())["accuracy"] == accuracy
    assert yaml.safe_load((repo / "params.yaml").read_text())["inference"]["tta"] == "flip"


def test_a_mistyped_key_fails_with_the_key_named(pipeline_copy):
    repo = pipeline_copy
    committed(repo)
    before = (repo / "params.yaml").read_text()

    # DVC itself refuses to override a key that params.yaml does not have, before running anything.
    typo = dvc(repo, "exp", "run", "-S", "train.epoch=3", check=False)
    assert typo.returncode == 255
    assert "Could not override 'train.epoch'" in typo.stderr and "Key 'epoch' is not in struct" in typo.stderr
    assert (repo / "params.yaml").read_text() == before
    assert list(experiments(repo)) == []

    # Forcing one in with `+` gets past DVC; the stage that reads the section then stops at params validation
    # (plot_errors here: the only stage whose section changed, and one that starts without TensorFlow).
    forced = dvc(repo, "exp", "run", "-S", "+plot_errors.n_randoms=3", check=False)
    assert forced.returncode == 255
    assert "error: unknown key plot_errors.n_randoms in params.yaml; did you mean plot_errors.n_random?" in (
        forced.stderr
    )
    assert "ERROR: failed to reproduce 'plot_errors'" in forced.stderr
    assert yaml.safe_load((repo / "params.yaml").read_text())["plot_errors"]["n_randoms"] == 3  # DVC leaves it
    run(["git", "checkout", "--", "params.yaml"], repo)


def wait_for_queue(repo: Path) -> str:
    """Poll `dvc queue status` until nothing is queued or running; return its last output."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        status = dvc(repo, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"the queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}"
        time.sleep(2)


def test_a_queued_sweep_runs_every_experiment(pipeline_copy):
    repo = pipeline_copy
    committed(repo)
    # Two ways of predicting with the committed model: each experiment reruns `evaluate` alone, no training.
    ttas = {"tta-flip": "flip", "tta-shift": "flip_shift"}
    for name, tta in ttas.items():
        queued = dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"inference.tta={tta}", "evaluate")
        assert f"Queued experiment '{name}' for future execution." in queued.stdout
    try:
        dvc(repo, "queue", "start", "-j", "1")
        status = wait_for_queue(repo)
    finally:
        dvc(repo, "queue", "stop", check=False)
    assert status.count("Success") == 2, status
    found = dict(experiments(repo))
    assert set(found) == set(ttas)
    for name, tta in ttas.items():
        assert exp_params(found[name])["inference"]["tta"] == tta
    # Each experiment ran with its own value: two results.
    assert exp_accuracy(found["tta-flip"]) != exp_accuracy(found["tta-shift"])
