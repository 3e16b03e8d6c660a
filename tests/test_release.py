"""The release workflow's steps, run here: the model card and the smoke test (tag parsing: test_registry.py)."""

import csv
import io
import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from fmnist import cli
from fmnist.apps.registry import ARTIFACT
from fmnist.lib import answers
from fmnist.lib.answers import Answers
from fmnist.lib.files import CLASS_NAMES, Split, save_split
from fmnist.lib.idx import RELEASE_FILES
from fmnist.lib.process import PipelineError, VerdictRefused
from fmnist.nn.model import build_model, save_model
from fmnist.tools import release
from fmnist.tools.release import model_card
from tests.helpers import REPO_ROOT, TINY_MODEL, VENV_BIN, run

WORKFLOW = yaml.safe_load((REPO_ROOT / ".github/workflows/release.yml").read_text())


def test_the_model_card_has_the_contract_the_results_and_the_provenance():
    card = model_card("v1.2.0", "prod", "0123abcd", REPO_ROOT)
    assert card.startswith("# fashion-cnn v1.2.0 (prod)\n")
    test = json.loads((REPO_ROOT / "metrics/test.json").read_text())
    assert f"Accuracy {test['accuracy']:.4f}" in card
    assert f"expected calibration error {test['ece']:.4f}. {test['coverage']:.1%} of the test images" in card
    assert f"with an AUROC of {test['worst_auroc']:.3f}" in card
    tflite = next(
        row
        for row in csv.DictReader(io.StringIO((REPO_ROOT / "plots/export.csv").read_text()))
        if row["file"] == "model.tflite"
    )
    assert f"| model.tflite | {int(tflite['size_kb']):,} | {float(tflite['agreement']):.2%} |" in card
    assert all(f"| {name} | " in card for name in CLASS_NAMES)  # per-class F1
    assert "uint8 images of shape (N, 28, 28, 1)" in card and "0 T-shirt/top, 1 Trouser" in card
    assert "Commit: `0123abcd`" in card and all(f.sha256 in card for f in RELEASE_FILES)


def test_the_smoke_step_stops_a_broken_model_in_one_line(tmp_path, garments, monkeypatch, capsys):
    # As the release job runs it: in the repository, on the prepared test split (here 100 synthetic garments).
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    images, labels = garments["t10k-images-idx3-ubyte"][:100, ..., None], garments["t10k-labels-idx1-ubyte"][:100]
    save_split(Split(images, labels), "test", tmp_path / "data" / "prepared")
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), tmp_path / "untrained.keras")
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(["release", "smoke", "untrained.keras"])
    out, err = capsys.readouterr()
    assert exited.value.code == 1  # the job fails: no release
    accuracy = re.fullmatch(r"smoke: untrained.keras classifies (\S+)% of 100 test images correctly\n", out).group(1)
    assert err == f"error: untrained.keras scored {accuracy}%, below 85%: not releasing it\n"


@pytest.mark.parametrize("count", ["0", "-5"])
def test_the_smoke_step_refuses_a_count_that_would_test_nothing(count, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["release", "smoke", "model.keras", "--count", count])
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: --count {count}: the smoke test needs at least one test image\n"


def test_the_workflow_releases_stage_assignments_only_after_the_smoke_test():
    assert WORKFLOW[True]["push"]["tags"] == ["fashion-cnn#*#*"]  # YAML reads the key `on` as True
    script = "\n".join(step.get("run", "") for step in WORKFLOW["jobs"]["release"]["steps"])
    steps = [  # in this order: the version the tag names is smoke-tested before anything is published
        "fmnist release parse-tag",
        'dvc artifacts get . fashion-cnn --rev "$VERSION" -o release/model.keras',
        "fmnist release smoke release/model.keras",
        "fmnist release card",
        "gh release create",
    ]
    assert all(step in script for step in steps)
    assert [script.index(step) for step in steps] == sorted(script.index(step) for step in steps)


# The promotion gate on two registered commits: one from before answers/ (plots/confusion.csv), one after.

ACTUAL = np.repeat(np.arange(10), 1000)


def answered(wrong: int) -> np.ndarray:
    """Predicted classes of the 10,000 test images with the first `wrong` of each class given the next class."""
    return np.where(np.arange(10_000) % 1000 < wrong // 10, (ACTUAL + 1) % 10, ACTUAL)


def commit_and_register(repo: Path, version: str, written: dict[str, str]) -> None:
    for path, text in written.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", version], repo)
    run([str(VENV_BIN / "gto"), "register", ARTIFACT, "--version", version], repo)


@pytest.fixture
def registered(tmp_path, monkeypatch) -> Path:
    """A git repository with fashion-cnn v1.0.0 (legacy answers, a seed record) and v2.0.0 (answers/test.csv, 400
    more mistakes) and v3.0.0 (no answers at all), registered by GTO; the working directory."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "test"], repo)
    shutil.copy(REPO_ROOT / "dvc.yaml", repo / "dvc.yaml")  # the artifact's declaration
    legacy = "actual,predicted\n" + "".join(
        f"{CLASS_NAMES[a]},{CLASS_NAMES[p]}\n" for a, p in zip(ACTUAL, answered(600), strict=True)
    )
    record = {
        "seeds": {"runs": [{"accuracy": a, "recall": dict.fromkeys(CLASS_NAMES, a)} for a in (0.939, 0.941, 0.94)]}
    }
    commit_and_register(repo, "v1.0.0", {"plots/confusion.csv": legacy, "metrics/seeds.json": json.dumps(record)})
    probabilities = np.eye(10)[answered(1000)]
    newer = answers.split_csv(ACTUAL, Answers(probabilities, np.zeros(10_000), np.zeros(10_000, bool)))
    commit_and_register(repo, "v2.0.0", {"answers/test.csv": newer})
    (repo / "answers/test.csv").unlink()
    (repo / "plots/confusion.csv").unlink()
    commit_and_register(repo, "v3.0.0", {})
    monkeypatch.chdir(repo)  # the release steps run in the repository
    return repo


@pytest.mark.slow
def test_the_gate_compares_a_commits_answers_with_an_older_commits_confusion_csv(registered):
    verdict = release.judged("v2.0.0", "v1.0.0")  # 0.94 (plots/confusion.csv) against 0.90 (answers/test.csv)
    assert verdict.word == "worse"
    with pytest.raises(VerdictRefused, match=r"^fashion-cnn v2.0.0 is worse than v1.0.0, which holds prod"):
        release.gate("v2.0.0", ["v1.0.0"], "prod", ["worse"])
    assert release.judged("v1.0.0", "v2.0.0").word == "better"  # the other way round: answers as the base
    with pytest.raises(
        PipelineError,
        match=r"^fashion-cnn v3.0.0's commit has no answers/test.csv \(nor the older plots/confusion.csv\)",
    ):
        release.judged("v3.0.0", "v1.0.0")
