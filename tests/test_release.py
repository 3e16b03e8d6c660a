"""The release workflow's steps, run here: the model card and the smoke test (tag parsing: test_registry.py)."""

import json
import shutil

import keras
import yaml

from fmnist.lib.dataset import CLASS_NAMES
from fmnist.lib.release import RELEASE_FILES
from fmnist.nn.model import build_model
from fmnist.nn.modelio import save_model
from fmnist.tools.release import model_card, smoke_accuracy
from tests.helpers import REPO_ROOT, TINY_MODEL

WORKFLOW = yaml.safe_load((REPO_ROOT / ".github/workflows/release.yml").read_text())


def test_the_model_card_has_the_contract_the_results_and_the_provenance():
    card = model_card("v1.2.0", "prod", "0123abcd", REPO_ROOT / "metrics")
    assert card.startswith("# fashion-cnn v1.2.0 (prod)\n")
    test = json.loads((REPO_ROOT / "metrics/test.json").read_text())["test"]
    assert f"Accuracy {test['accuracy']:.4f}" in card
    assert all(f"| {name} | " in card for name in CLASS_NAMES)  # per-class F1
    assert "uint8 images of shape (N, 28, 28, 1)" in card and "0 T-shirt/top, 1 Trouser" in card
    assert "Commit: `0123abcd`" in card and all(f.sha256 in card for f in RELEASE_FILES)


def test_the_smoke_test_stops_a_broken_model(tmp_path, garments, monkeypatch):
    images, labels = (
        garments["t10k-images-idx3-ubyte"][:100, ..., None],
        garments["t10k-labels-idx1-ubyte"][:100],
    )
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), tmp_path / "untrained.keras")
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")  # the release job runs in the repository
    monkeypatch.chdir(tmp_path)
    assert smoke_accuracy(tmp_path / "untrained.keras", images, labels) < 0.5  # ~chance: the release would stop


def test_the_workflow_runs_on_stage_assignments_and_calls_these_steps():
    assert WORKFLOW[True]["push"]["tags"] == ["fashion-cnn#*#*"]  # YAML reads the key `on` as True
    script = "\n".join(step.get("run", "") for step in WORKFLOW["jobs"]["release"]["steps"])
    for command in (
        "fmnist release parse-tag",
        "dvc artifacts get . fashion-cnn --rev",
        "fmnist release smoke",
        "fmnist release card",
        "gh release create",
    ):
        assert command in script
