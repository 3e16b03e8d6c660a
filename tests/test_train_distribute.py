"""Training on several devices and workers: the cluster rules on their own, real runs of the train stage with
MirroredStrategy on two logical CPUs and with two MultiWorkerMirroredStrategy processes on 127.0.0.1, and the
Kubeflow TFJob manifest."""

import json
import os
import signal
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from fmnist.lib import files
from fmnist.lib.process import PipelineError, local_cluster
from fmnist.stages.train import cluster_from_env, is_chief, peers_lost_as_error
from tests.helpers import REPO_ROOT, VENV_BIN, copy_repo, dvc, git_clone, git_commit, run, set_param

SRC = REPO_ROOT / "src"


def strategy_with(cluster: dict, task_type: str, task_id: int) -> types.SimpleNamespace:
    """A stand-in strategy with a cluster resolver for `cluster` ({job: [address, ...]})."""
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_the_chief_is_the_chief_task_else_worker_0_else_the_only_process():
    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(strategy_with(workers, "worker", 0)) and not is_chief(strategy_with(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], **workers}
    assert is_chief(strategy_with(with_chief, "chief", 0)) and not is_chief(strategy_with(with_chief, "worker", 0))
    assert is_chief(tf.distribute.get_strategy())


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "TF_CONFIG is not set"),
        ("{not json", "TF_CONFIG is not a valid cluster and task"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not a valid cluster and task"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "IndexError"),
    ],
)
def test_a_missing_or_broken_tf_config_names_the_problem_and_the_fix(monkeypatch, value, problem):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(PipelineError, match=f"{problem}.*set it on every machine"):
        cluster_from_env()


def test_local_cluster_gives_each_worker_the_same_cluster_and_its_own_index():
    configs = local_cluster(2)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": 0}, {"type": "worker", "index": 1}]
    addresses = configs[0]["cluster"]["worker"]
    assert configs[1]["cluster"]["worker"] == addresses and len(set(addresses)) == 2


def test_a_lost_worker_becomes_one_clear_error_and_an_abort_on_one_machine_stays_itself():
    expected = r"lost contact with another worker .*UnavailableError: peer reset.*restart"
    with pytest.raises(PipelineError, match=expected), peers_lost_as_error(multi_worker=True):
        raise tf.errors.UnavailableError(None, None, "peer reset\nGRPC details")
    with pytest.raises(tf.errors.AbortedError, match="could not create a primitive"), peers_lost_as_error(False):
        raise tf.errors.AbortedError(None, None, "could not create a primitive descriptor")


# --- The train stage for real, on the tiny slice -------------------------------------------------------------


def workspace_files(repo: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime)} of every file in a workspace, without git's, Python's and DVC's scratch files.

    (.dvc/tmp holds dvclive's per-epoch signal for `dvc exp run`, DVCLIVE_STEP_COMPLETED, not an output.)
    """
    return {
        p.relative_to(repo).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in repo.rglob("*")
        if p.is_file()
        and ".git" not in p.parts
        and "__pycache__" not in p.parts
        and not p.relative_to(repo).as_posix().startswith(".dvc/tmp/")
    }


def start_train(repo: Path, tf_config: dict, command: tuple[str, ...] = ("python", "-m", "fmnist.stages", "train")):
    """`command` (by default the train stage's) in `repo` as one worker of `tf_config`'s cluster."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo / "src"),
        "TF_CONFIG": json.dumps(tf_config),
    }
    return subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(workers: list[subprocess.Popen]) -> list[str]:
    """Each worker's stdout once all have ended; fails with the ends of their stderr unless every one exited 0."""
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [w.returncode for w in workers] == [0] * len(workers), "".join(err[-2000:] for _, err in outputs)
    return [out for out, _ in outputs]


def validation_accuracy(repo: Path) -> float:
    """The validation accuracy of the last epoch that the train stage recorded (dvclive's metrics.json)."""
    return json.loads((repo / files.TRAIN_METRICS_FILE).read_text())["eval"]["accuracy"]


def epoch_losses(repo: Path) -> np.ndarray:
    """The training loss of each epoch that the train stage recorded (dvclive's train/loss.tsv)."""
    return np.loadtxt(repo / files.TRAIN_PLOTS_DIR / "metrics/train/loss.tsv", skiprows=1, usecols=1, ndmin=1)


def fingerprint(stdout: str) -> str:
    """The weights fingerprint a train run printed."""
    return stdout.split("weights ")[1].split(";")[0]


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_trains_the_tiny_slice(pipeline_copy):
    set_param(pipeline_copy, "train", "distribute", "mirrored")
    set_param(pipeline_copy, "train", "devices", ["/cpu:0", "/cpu:1"])
    out = dvc(pipeline_copy, "repro", "train").stdout
    assert "on 2 replica(s)" in out
    assert validation_accuracy(pipeline_copy) > 0.3  # chance: 0.1


def tfjob_scripts() -> dict[str, str]:
    """{"Chief": script, "Worker": script}: what docs/tfjob.yaml runs in each pod's `tensorflow` container."""
    specs = yaml.safe_load((REPO_ROOT / "docs/tfjob.yaml").read_text())["spec"]["tfReplicaSpecs"]
    containers = {role: spec["template"]["spec"]["containers"] for role, spec in specs.items()}
    return {role: found[0]["args"][0] for role, found in containers.items() if found[0]["name"] == "tensorflow"}


@pytest.mark.slow
def test_the_tfjob_manifests_pods_train_together_and_the_chief_shares_the_experiment(pipeline_copy, tmp_path):
    # The manifest's own scripts, as the operator runs them: an image of a commit that says multi_worker, the DVC
    # remote and a git origin the chief pushes to; the operator writes TF_CONFIG. Here the pods are two processes
    # on 127.0.0.1, the remote a directory, the origin a bare repository.
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    set_param(pipeline_copy, "train", "distribute", "multi_worker")
    run(["git", "remote", "add", "origin", str(origin)], pipeline_copy)
    dvc(pipeline_copy, "remote", "add", "-d", "storage", str(tmp_path / "dvc-remote"))
    git_commit(pipeline_copy, "train on several machines")
    dvc(pipeline_copy, "push")
    run(["git", "push", "-q", "origin", "main"], pipeline_copy)
    chief, worker = git_clone(origin, tmp_path / "chief"), git_clone(origin, tmp_path / "worker")  # the image
    before = workspace_files(worker)
    address_a, address_b = local_cluster(2)[0]["cluster"]["worker"]
    cluster = {"chief": [address_a], "worker": [address_b]}
    scripts = tfjob_scripts()
    pods = [
        start_train(
            repo, {"cluster": cluster, "task": {"type": role.lower(), "index": 0}}, ("sh", "-ec", scripts[role])
        )
        for repo, role in ((chief, "Chief"), (worker, "Worker"))
    ]
    chief_out, worker_out = finished(pods)
    assert fingerprint(chief_out) == fingerprint(worker_out)  # the same weights on both
    assert "on 2 replica(s)" in chief_out and "saved in float32" in chief_out
    new = {path for path in workspace_files(worker) if path not in before}
    assert new and all(path.startswith(("data/prepared/", ".dvc/cache/")) for path in new)  # pulled, no more
    # As the manifest's header says, on your machine afterwards: the experiment and its model come back.
    yours = git_clone(origin, tmp_path / "yours")
    dvc(yours, "exp", "pull", "origin", "tfjob-train")
    dvc(yours, "exp", "apply", "tfjob-train")
    dvc(yours, "pull", "train")
    assert (yours / files.MODEL_FILE).read_bytes() == (chief / files.MODEL_FILE).read_bytes()


@pytest.mark.slow
def test_without_dropout_mirrored_and_two_workers_take_the_same_steps(pipeline_copy, tmp_path):
    # Both split every global batch over two replicas (mirrored: in halves; two workers: every other image), sum
    # the gradients and normalise over the global batch, so only the order of float additions differs. Dropout
    # is off: each replica draws its own mask, and which images a mask meets depends on that split.
    # Rounding differences grow about tenfold a step (Adam's first steps move each weight by about the learning
    # rate, whatever the size of its gradient), so the run is short: 8 steps of 400 images, after which the two
    # strategies' epoch losses agree to 2e-4 in float32, and unsynchronised batch norm misses by 0.008. Not in
    # bf16: 8-bit mantissas make any two splits of a batch (one device against mirrored too) differ by 0.1 in 50.
    set_param(pipeline_copy, "model", "dropout", 0.0)
    set_param(pipeline_copy, "model", "precision", "float32")
    set_param(pipeline_copy, "train", "batch_size", 400)
    mirrored = copy_repo(pipeline_copy, tmp_path / "mirrored")
    set_param(mirrored, "train", "distribute", "mirrored")
    set_param(mirrored, "train", "devices", ["/cpu:0", "/cpu:1"])
    dvc(mirrored, "repro", "train")
    set_param(pipeline_copy, "train", "distribute", "multi_worker")
    other = copy_repo(pipeline_copy, tmp_path / "other")
    workers = [start_train(repo, config) for repo, config in zip((pipeline_copy, other), local_cluster(2), strict=True)]
    finished(workers)
    np.testing.assert_allclose(epoch_losses(pipeline_copy), epoch_losses(mirrored), atol=1e-3)


@pytest.mark.slow
def test_a_worker_that_stops_answering_makes_the_chief_fail_in_one_line_and_keep_its_old_outputs(
    pipeline_copy, tmp_path
):
    set_param(pipeline_copy, "train", "distribute", "multi_worker")
    set_param(pipeline_copy, "train", "epochs", 500)  # far longer than the test waits
    other = copy_repo(pipeline_copy, tmp_path / "other")
    before = workspace_files(pipeline_copy)
    chief_config, other_config = local_cluster(2)
    chief, worker = start_train(pipeline_copy, chief_config), start_train(other, other_config)
    try:
        while not chief.stdout.readline().startswith("Epoch 2/"):  # training is under way on both
            assert chief.poll() is None, chief.stderr.read()[-2000:]
        os.kill(worker.pid, signal.SIGSTOP)  # alive, connections open, but silent: a hung machine
        _, stderr = chief.communicate(timeout=120)
    finally:
        worker.kill()
        worker.communicate()
    assert chief.returncode == 1
    assert "error: lost contact with another worker (UnavailableError: " in stderr
    assert "restart the train stage on all of them" in stderr
    assert workspace_files(pipeline_copy) == before  # the old model and logs, no temporary files


@pytest.mark.slow
def test_a_worker_whose_peer_never_starts_fails_within_the_bound_and_writes_nothing(pipeline_copy):
    set_param(pipeline_copy, "train", "distribute", "multi_worker")
    set_param(pipeline_copy, "train", "peer_timeout_s", 5)
    before = workspace_files(pipeline_copy)
    start = time.monotonic()
    lonely = start_train(pipeline_copy, local_cluster(2)[0])
    _, stderr = lonely.communicate(timeout=120)
    assert time.monotonic() - start < 5 + 60  # the bound, plus importing TensorFlow
    assert lonely.returncode != 0
    assert "error: worker 0 could not reach every worker in TF_CONFIG" in stderr
    assert "within train.peer_timeout_s = 5 s; start the train stage on all of them" in stderr
    assert workspace_files(pipeline_copy) == before
