"""The model registry, offline: GTO versions and stages as git tags, `dvc artifacts get` from a local remote.

Two tiny trainings are registered as v1.0.0 and v2.0.0, each with its calibration; `prod` goes to v1, then v2,
then back to v1 (a rollback), and every fetch by stage or version must return exactly that version's bytes. A
version registered before the calibrate stage existed (v0.9.0) still answers, with a warning.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fmnist.apps.registry import ARTIFACT
from fmnist.lib.calibration import Calibration, file_md5
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.params import InferenceParams
from fmnist.nn.inference import Predictor
from fmnist.nn.model import load_model
from tests.helpers import REPO_ROOT, VENV_BIN, copy_repo, dvc, git_clone, git_commit, run, set_param

pytestmark = pytest.mark.slow


def gto(repo, *args: str) -> str:
    return run([str(VENV_BIN / "gto"), *args], repo).stdout


@pytest.fixture(scope="module")
def registry(seeded_repo, tmp_path_factory):
    """(repo, {version: model bytes}) after three registered versions, all pushed to a local DVC remote: v0.9.0 at a
    commit from before the calibrate stage (no models/calibration.npz), then two trainings with their calibration
    (seed 1's from the seed record's run-cache)."""
    root = tmp_path_factory.mktemp("registry")
    repo = copy_repo(seeded_repo, root / "repo")  # trained with seed 0, committed
    dvc(repo, "remote", "add", "-d", "local", str(root / "remote"))
    git_commit(repo, "a local remote")  # a commit of its own: the revert below keeps it
    dvc(repo, "remove", "calibrate")  # as the pipeline was: the model, and nothing beside it
    (repo / "models/calibration.npz").unlink()  # no longer ignored by git: it would be committed
    git_commit(repo, "model v0.9.0, before calibration")
    gto(repo, "register", ARTIFACT, "--version", "v0.9.0")
    dvc(repo, "push")
    versions = {"v0.9.0": (repo / "models/model.keras").read_bytes()}
    run(["git", "revert", "--no-edit", "HEAD"], repo)  # the calibrate stage back
    dvc(repo, "checkout", "models/calibration.npz")
    for version, seed in (("v1.0.0", 0), ("v2.0.0", 1)):
        set_param(repo, "train", "seed", seed)
        dvc(repo, "repro", "calibrate")  # the registered artifact, the model, and its calibration beside it
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-q", "--allow-empty", "-m", f"model {version}"], repo)  # v1: as reproduced
        gto(repo, "register", ARTIFACT, "--version", version)
        dvc(repo, "push")
        versions[version] = (repo / "models/model.keras").read_bytes()
    assert versions["v1.0.0"] != versions["v2.0.0"]
    return repo, versions


def artifacts_get(repo, tmp_path, *selector: str):
    """`dvc artifacts get REPO fashion-cnn SELECTOR -o FILE`, run from outside the repository."""
    out = tmp_path / "fetched.keras"
    out.unlink(missing_ok=True)
    result = dvc(tmp_path, "artifacts", "get", str(repo), ARTIFACT, *selector, "-o", str(out), check=False)
    return result, (out.read_bytes() if out.exists() else None)


def test_the_artifact_is_declared_with_what_a_consumer_needs(registry):
    repo, _ = registry
    artifact = yaml.safe_load((repo / "dvc.yaml").read_text())["artifacts"][ARTIFACT]
    assert artifact["path"] == "models/model.keras" and artifact["type"] == "model"
    meta = artifact["meta"]
    assert meta["input"] == {"shape": [None, 28, 28, 1], "dtype": "uint8", "range": [0, 255]}
    assert meta["output"].startswith("logits") and len(meta["classes"]) == 10
    listed = dvc(repo, "ls", ".", "models").stdout
    assert "model.keras" in listed


def test_promote_promote_and_roll_back_each_fetch_the_right_bytes(registry, tmp_path):
    repo, versions = registry
    for version, again in (("v1.0.0", []), ("v2.0.0", []), ("v1.0.0", ["--force"])):  # the last one rolls back
        gto(repo, "assign", ARTIFACT, "--version", version, "--stage", "prod", *again)
        result, fetched = artifacts_get(repo, tmp_path, "--stage", "prod")
        assert result.returncode == 0, result.stderr
        assert fetched == versions[version]
    # Every assignment is its own tag: the stage's history stays in git.
    assert sorted(run(["git", "tag", "--list", f"{ARTIFACT}#prod#*"], repo).stdout.split()) == [
        f"{ARTIFACT}#prod#{n}" for n in (1, 2, 3)
    ]
    assert artifacts_get(repo, tmp_path, "--rev", "v2.0.0")[1] == versions["v2.0.0"]


def test_fmnist_finds_a_registered_model_by_stage_or_version(registry, tmp_path):
    repo, versions = registry
    gto(repo, "assign", ARTIFACT, "--version", "v2.0.0", "--stage", "staging")
    # In a child process, as `fmnist predict` runs it: DVC sets up its own logging, which outlives a test.
    for selector, expected in (("stage='staging'", "v2.0.0"), ("version='v1.0.0'", "v1.0.0")):
        code = (
            "from fmnist.apps import registry\n"
            f"found = registry.registered_model({str(repo)!r}, {selector})\n"
            "print(found.path, found.commit, registry.inference_params(found).tta, found.calibrated)"
        )
        found = run([str(VENV_BIN / "python"), "-c", code], tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        path, commit, tta, calibrated = found.stdout.strip().splitlines()[-1].split()
        assert Path(path).is_relative_to(tmp_path / "cache") and Path(path).read_bytes() == versions[expected]
        assert commit == run(["git", "rev-parse", f"{ARTIFACT}@{expected}^{{commit}}"], repo).stdout.strip()
        assert tta == "none"  # the tiny pipeline's params.yaml at that commit
        # Its calibration beside it, fitted for that model, where fmnist.lib.calibration.load_for looks.
        assert calibrated == "True"
        assert Calibration.load(Path(path).with_name("calibration.npz")).model_md5 == file_md5(Path(path))


def predict_blank(repo: Path, tmp_path: Path, version: str):
    """`fmnist predict blank.png --model-version VERSION --format json` from outside `repo`: (result, its answer)."""
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "blank.png")  # as the data set's: light on black
    command = [str(VENV_BIN / "fmnist"), "predict", "blank.png", "--model-repo", str(repo), "--model-version", version]
    result = run([*command, "--format", "json"], tmp_path, check=False, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    return result, (json.loads(result.stdout) if result.returncode == 0 else None)


def test_a_registered_version_answers_unsure_with_the_calibration_of_its_own_commit(registry, tmp_path):
    repo, _ = registry
    result, answer = predict_blank(repo, tmp_path, "v2.0.0")
    assert (result.returncode, result.stderr) == (0, "")  # calibrated: nothing to warn of
    commit = run(["git", "rev-parse", f"{ARTIFACT}@v2.0.0^{{commit}}"], repo).stdout.strip()
    fetched = tmp_path / "cache" / "fmnist" / "models" / commit
    calibration = Calibration.load(fetched / "calibration.npz")
    assert calibration.model_md5 == file_md5(fetched / "model.keras")  # that version's own
    # The answer of that model with that calibration, whatever a tiny model makes of a blank image.
    blank = np.zeros((1, 28, 28, 1), np.uint8)
    expected = Predictor(load_model(fetched / "model.keras"), InferenceParams("none", 8), calibration)(blank)
    assert answer["unsure_score"] == pytest.approx(float(expected.unsure_score[0]), abs=1e-5)
    assert answer["unsure"] is bool(expected.unsure[0]) and answer["unsure_threshold"] == calibration.threshold


def test_a_version_registered_before_calibration_existed_warns_in_one_line_and_still_answers(registry, tmp_path):
    repo, _ = registry
    result, answer = predict_blank(repo, tmp_path, "v0.9.0")
    assert result.returncode == 0, result.stderr
    commit = run(["git", "rev-parse", f"{ARTIFACT}@v0.9.0^{{commit}}"], repo).stdout.strip()
    [line] = result.stderr.splitlines()
    assert line == (
        f"warning: {ARTIFACT} at version v0.9.0 (commit {commit[:12]}) was registered before calibration existed: "
        "it cannot say unsure, so every image gets a garment label; "
        f"use a version registered since (`gto show {ARTIFACT}` lists them)"
    )
    assert answer["class"] in CLASS_NAMES  # even for a blank image: it cannot say otherwise
    assert (answer["unsure"], answer["unsure_score"], answer["unsure_threshold"]) == (None, None, None)


@pytest.mark.parametrize("selector", [("--rev", "v9.9.9"), ("--stage", "canary")])
def test_a_missing_version_or_stage_is_a_clear_error(registry, tmp_path, selector):
    repo, _ = registry
    result, fetched = artifacts_get(repo, tmp_path, *selector)
    assert result.returncode != 0 and fetched is None
    assert "Traceback" not in result.stderr


def test_fmnist_says_in_one_line_what_is_not_registered(registry, tmp_path):
    repo, _ = registry
    for args in (["--model-version", "v9.9.9"], ["--model-stage", "canary"]):
        result = run(
            [str(VENV_BIN / "fmnist"), "predict", "x.jpg", "--model-repo", str(repo), *args], tmp_path, check=False
        )
        assert result.returncode == 1 and result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: no {ARTIFACT} model at ") and "gto show" in line


def test_a_missing_artifact_name_is_a_clear_error(registry, tmp_path):
    repo, _ = registry
    result = dvc(tmp_path, "artifacts", "get", str(repo), "no-such-model", "-o", str(tmp_path / "x"), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    shutil.rmtree(tmp_path / "x", ignore_errors=True)


def test_the_release_workflow_reads_what_a_tag_says(registry):
    repo, _ = registry
    gto(
        repo, "assign", ARTIFACT, "--version", "v2.0.0", "--stage", "prod", "--force"
    )  # a new tag, whatever came before
    tags = run(["git", "tag", "--list", f"{ARTIFACT}#prod#*"], repo).stdout.split()
    newest = max(tags, key=lambda tag: int(tag.rsplit("#", 1)[1]))
    parse_tag = [str(VENV_BIN / "fmnist"), "release", "parse-tag"]  # as the workflow runs it
    parsed = run([*parse_tag, newest], repo).stdout
    assert parsed.splitlines() == [f"name={ARTIFACT}", "version=v2.0.0", "stage=prod", "event=assignment"]
    registration = run([*parse_tag, f"{ARTIFACT}@v1.0.0"], repo)
    assert registration.stdout.splitlines() == [f"name={ARTIFACT}", "version=v1.0.0", "stage=", "event=registration"]
    bad = run([*parse_tag, "v1.0.0"], repo, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: v1.0.0 is not a GTO tag")


# Promotion: a stage goes to a version only if the report's verdict against the version it holds is not "worse".


@pytest.fixture(scope="module")
def candidates(reseeded_repo, tmp_path_factory):
    """A repository with three registered versions, its tags pushed to a bare origin: v1.0.0 (seed 0, with its
    seed record), v1.1.0 (seed 1: a change of seed, no better, no worse) and v2.0.0 (learning rate 1e-5: it
    barely leaves its random start)."""
    root = tmp_path_factory.mktemp("candidates")
    repo = copy_repo(reseeded_repo, root / "repo")  # the seed record committed, seed 1 trained in the workspace
    gto(repo, "register", ARTIFACT, "--version", "v1.0.0", "HEAD")
    git_commit(repo, "model v1.1.0")
    gto(repo, "register", ARTIFACT, "--version", "v1.1.0")
    set_param(repo, "train", "learning_rate", 0.00001)
    dvc(repo, "repro", "evaluate")  # what promotion compares: the model and its test answers
    git_commit(repo, "model v2.0.0")
    gto(repo, "register", ARTIFACT, "--version", "v2.0.0")
    run(["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], root)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], repo)
    run(["git", "push", "-q", "--tags", "origin", "main"], repo)
    return repo


def fmnist_in(repo: Path, *args: str, check: bool = True):
    """`fmnist ARGS` of `repo`'s own code, in `repo`."""
    return run([str(VENV_BIN / "fmnist"), *args], repo, check=check, env={"PYTHONPATH": str(repo / "src")})


def prod_tags(repo: Path, remote: str | None = None) -> list[str]:
    """The prod assignment tags of `repo`, or of its git remote `remote`."""
    if remote is None:
        return sorted(run(["git", "tag", "--list", f"{ARTIFACT}#prod#*"], repo).stdout.split())
    listed = run(["git", "ls-remote", "--tags", remote, f"refs/tags/{ARTIFACT}#prod#*"], repo).stdout.splitlines()
    return sorted(line.split("refs/tags/")[1] for line in listed if not line.endswith("^{}"))  # not peeled refs


def test_promotion_refuses_a_worse_version_in_one_line_and_lets_an_equal_one_through(candidates, tmp_path):
    repo = copy_repo(candidates, tmp_path / "repo")
    first = fmnist_in(repo, "release", "promote", "--version", "v1.0.0").stdout
    assert "v1.0.0 -> prod: the first version in it" in first
    equal = fmnist_in(repo, "release", "promote", "--version", "v1.1.0").stdout
    assert "v1.1.0 -> prod: within noise against v1.0.0" in equal
    worse = fmnist_in(repo, "release", "promote", "--version", "v2.0.0", check=False)
    assert worse.returncode == 3 and worse.stdout == ""
    [line] = worse.stderr.strip().splitlines()
    assert line.startswith(f"error: {ARTIFACT} v2.0.0 is worse than v1.1.0, which holds prod (p = ")
    assert prod_tags(repo) == [f"{ARTIFACT}#prod#1", f"{ARTIFACT}#prod#2"]  # no third assignment
    assert fmnist_in(repo, "release", "check-assignment", f"{ARTIFACT}#prod#2").stdout.startswith(
        f"check-assignment: {ARTIFACT}#prod#2: v1.1.0: within noise against v1.0.0"
    )
    rollback = fmnist_in(repo, "release", "promote", "--version", "v1.0.0").stdout  # it held prod before
    assert "v1.0.0 -> prod: a rollback: it held prod before v1.1.0" in rollback


def release_step(name: str) -> str:
    """The `run:` script of the release workflow's step `name`."""
    steps = yaml.safe_load((REPO_ROOT / ".github/workflows/release.yml").read_text())["jobs"]["release"]["steps"]
    return next(step["run"] for step in steps if step.get("name") == name)


def test_a_worse_version_assigned_by_hand_loses_its_tag_in_the_release_workflow(candidates, tmp_path):
    clone = git_clone(candidates.parent / "origin.git", tmp_path / "runner")  # what the workflow checks out
    gto(clone, "assign", ARTIFACT, "--version", "v1.0.0", "--stage", "prod")
    run(["git", "push", "-q", "origin", f"{ARTIFACT}#prod#1"], clone)
    gto(clone, "assign", ARTIFACT, "--version", "v2.0.0", "--stage", "prod")  # by hand, then pushed
    tag = f"{ARTIFACT}#prod#2"
    run(["git", "push", "-q", "origin", tag], clone)
    step = release_step("The version is not worse than the one the stage held")
    result = run(["bash", "-e", "-c", step], clone, check=False, env={"TAG": tag, "PYTHONPATH": str(clone / "src")})
    assert result.returncode == 3 and f"::error::{tag} assigned a version worse" in result.stdout
    assert prod_tags(clone, "origin") == [f"{ARTIFACT}#prod#1"]  # prod is v1.0.0 again for everyone
