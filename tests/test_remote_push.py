"""`fmnist remote push` (fmnist.tools.remote): the runs' `cache: false` outputs travel with the run records.

The fast tests read the project's dvc.yaml and run records made up here. The slow ones use a toy pipeline (one
stage, a cached model, `cache: false` metrics and plots, no TensorFlow) and a directory remote: DVC's idiom alone
leaves another clone training again, and `fmnist remote push` makes it restore the run. If DVC ever pushes those
outputs itself (treeverse/dvc#5749), the first slow test fails and `fmnist remote push` can become `dvc push
--run-cache` (docs/remotes.md).
"""

from pathlib import Path

import pytest
import yaml

from fmnist.tools import remote
from tests.helpers import REPO_ROOT, VENV_BIN, dvc, git_clone, git_commit, init_git_dvc, run, stages_run

MODEL_OUT = {"path": "models/model.keras", "hash": "md5", "md5": "a" * 32, "size": 10}
METRICS_OUT = {"path": "metrics/val.json", "hash": "md5", "md5": "b" * 32, "size": 20}
PLOTS_OUT = {"path": "metrics/train", "hash": "md5", "md5": "c" * 32 + ".dir", "size": 30, "nfiles": 4}


def test_the_uncached_outputs_are_the_metrics_and_plots_of_dvc_yaml():
    uncached = remote.uncached_paths(REPO_ROOT / "dvc.yaml")
    assert {"metrics/train", "metrics/val.json", "answers/test.csv", "plots/per_class.csv"} <= uncached
    assert not uncached & {"models/model.keras", "data/prepared", "data/predictions/test_probabilities.npy"}


def write_record(runs: Path, key: str, value: str, text: str) -> None:
    """A run record at runs/<key[:2]>/<key>/<value>, where DVC keeps them."""
    path = runs / key[:2] / key / value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_uncached_outputs_of_every_run_once_each_and_damaged_records_skipped(tmp_path):
    runs = tmp_path / "runs"
    record = {"cmd": "python -m fmnist.stages evaluate", "outs": [MODEL_OUT, METRICS_OUT, PLOTS_OUT]}
    write_record(runs, "ab" * 32, "01" * 32, yaml.safe_dump(record))
    write_record(runs, "cd" * 32, "02" * 32, yaml.safe_dump({**record, "outs": [METRICS_OUT]}))  # the same metrics
    write_record(runs, "ef" * 32, "03" * 32, "outs: [unclosed")  # damaged
    write_record(runs, "ef" * 32, "04" * 32, "")  # half-written
    outputs = remote.uncached_outputs(REPO_ROOT / "dvc.yaml", runs)
    assert outputs == [METRICS_OUT, PLOTS_OUT]


def test_the_dvc_file_names_each_output_by_its_md5_and_keeps_its_hash_fields():
    listing = remote.dvc_file([METRICS_OUT, PLOTS_OUT])
    assert listing == {"outs": [{**METRICS_OUT, "path": "b" * 32}, {**PLOTS_OUT, "path": "c" * 32 + ".dir"}]}


def test_no_runs_no_outputs(tmp_path):
    assert remote.uncached_outputs(REPO_ROOT / "dvc.yaml", tmp_path / "runs") == []


# A toy pipeline: the run-cache round trip in seconds.

TOY_STAGE = """\
import json, os, yaml
n = yaml.safe_load(open("params.yaml"))["n"]
open("model.bin", "w").write(f"model {n}\\n")
os.makedirs("plots", exist_ok=True)
open("plots/curve.tsv", "w").write(f"step\\tvalue\\n0\\t{n}\\n")
json.dump({"n": n}, open("metrics.json", "w"))
"""
TOY_DVC_YAML = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [n]
    outs: [model.bin]
    metrics:
      - metrics.json:
          cache: false
    plots:
      - plots:
          cache: false
"""


@pytest.fixture
def toy(tmp_path) -> tuple[Path, Path]:
    """(clone A, B): A ran the toy pipeline at n=1, committed and pushed it; then ran n=2 without committing.
    B is a clone of A's commit, set to n=2."""
    repo_a = tmp_path / "a"
    repo_a.mkdir()
    init_git_dvc(repo_a)
    (repo_a / "train.py").write_text(TOY_STAGE)
    (repo_a / "dvc.yaml").write_text(TOY_DVC_YAML)
    (repo_a / "params.yaml").write_text("n: 1\n")
    dvc(repo_a, "repro")
    dvc(repo_a, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    git_commit(repo_a, "toy pipeline at n=1")
    dvc(repo_a, "push")
    repo_b = git_clone(repo_a, tmp_path / "b")
    for repo in (repo_a, repo_b):
        (repo / "params.yaml").write_text("n: 2\n")
    assert stages_run(dvc(repo_a, "repro").stdout) == ["train"]
    return repo_a, repo_b


@pytest.mark.slow
def test_dvc_push_run_cache_alone_leaves_another_clone_training_again(toy):
    repo_a, repo_b = toy
    dvc(repo_a, "push", "--run-cache")
    dvc(repo_b, "pull", "--run-cache")
    repro = dvc(repo_b, "repro", "--pull")
    assert stages_run(repro.stdout) == ["train"]  # the record arrived, its metrics and plots did not
    assert "Missing cache files" in repro.stderr


@pytest.mark.slow
def test_fmnist_remote_push_lets_another_clone_restore_the_run(toy):
    repo_a, repo_b = toy
    before = run(["git", "status", "--porcelain"], repo_a).stdout
    pushed = run([str(VENV_BIN / "fmnist"), "remote", "push"], repo_a).stdout
    assert pushed.startswith("remote push: ") and "files sent" in pushed
    assert run(["git", "status", "--porcelain"], repo_a).stdout == before  # the temporary .dvc file is gone
    dvc(repo_b, "pull", "--run-cache")
    repro = dvc(repo_b, "repro", "--pull").stdout
    assert stages_run(repro) == [] and "Stage 'train' is cached - skipping run" in repro, repro
    for out in ("model.bin", "metrics.json", "plots/curve.tsv"):
        assert (repo_b / out).read_bytes() == (repo_a / out).read_bytes(), out
