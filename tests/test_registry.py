"""The model registry, offline: GTO versions and stages as git tags, `dvc artifacts get` from a local remote.

Two tiny trainings are registered as v1.0.0 and v2.0.0; `prod` goes to v1, then v2, then back to v1 (a
rollback), and every fetch by stage or version must return exactly that version's bytes.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from fmnist.apps.registry import ARTIFACT
from tests.helpers import VENV_BIN, copy_repo, dvc, git_commit, run, set_param

pytestmark = pytest.mark.slow


def gto(repo, *args: str) -> str:
    return run([str(VENV_BIN / "gto"), *args], repo).stdout


@pytest.fixture(scope="module")
def registry(reproduced_repo, tmp_path_factory):
    """(repo, {version: model bytes}) after two registered trainings, both pushed to a local DVC remote."""
    root = tmp_path_factory.mktemp("registry")
    repo = copy_repo(reproduced_repo, root / "repo")  # trained with seed 0 already
    dvc(repo, "remote", "add", "-d", "local", str(root / "remote"))
    versions = {}
    for version, seed in (("v1.0.0", 0), ("v2.0.0", 1)):
        set_param(repo, "train", "seed", seed)
        dvc(repo, "repro", "train")  # the registered artifact: the model
        git_commit(repo, f"model {version}")
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
            "print(found.path, found.commit, registry.inference_params(found).tta)"
        )
        found = run([str(VENV_BIN / "python"), "-c", code], tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        path, commit, tta = found.stdout.strip().splitlines()[-1].split()
        assert Path(path).is_relative_to(tmp_path / "cache") and Path(path).read_bytes() == versions[expected]
        assert commit == run(["git", "rev-parse", f"{ARTIFACT}@{expected}^{{commit}}"], repo).stdout.strip()
        assert tta == "none"  # the tiny pipeline's params.yaml at that commit


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
