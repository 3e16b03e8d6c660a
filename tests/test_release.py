"""The release workflow's steps, run here: the model card and the smoke test (tag parsing: test_registry.py)."""

import json
import re
import shutil

import keras
import pytest
import yaml

from fmnist import cli
from fmnist.lib.dataset import CLASS_NAMES, Split, save_split
from fmnist.lib.idx import RELEASE_FILES
from fmnist.nn.model import build_model, save_model
from fmnist.tools.release import model_card
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
