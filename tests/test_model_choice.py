"""fmnist.apps.model_choice, without TensorFlow: which model file answers, with which inference params and which
calibration, and the one warning line where it cannot answer unsure (predict and serve load it: test_predict.py,
test_serve.py)."""

import dataclasses

import numpy as np
import pytest
import yaml

from fmnist.apps import model_choice
from fmnist.lib.calibration import Calibration, file_md5
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.params import InferenceParams
from fmnist.lib.process import PipelineError
from tests.helpers import REPO_ROOT


def calibration_for(model, tta: str = "flip") -> Calibration:
    """A calibration of the model file `model` for the views of `tta` (the numbers are beside the point here)."""
    return Calibration(
        model_md5=file_md5(model),
        tta=tta,
        temperature=1.5,
        energy_centre=0.0,
        energy_tail=1.0,
        class_means=np.zeros((10, 2), np.float32),
        whitening=np.eye(2, dtype=np.float32),
        distance_centre=0.0,
        distance_tail=1.0,
        threshold=1.0,
        coverage=0.95,
    )


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A directory with this repository's params.yaml (inference.tta: flip) and a model file of a few bytes."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["inference"] = {"tta": "flip", "batch_size": 100}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "model.keras").write_bytes(b"a model")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_model_file_with_its_calibration_answers_unsure_with_this_directorys_params(workspace):
    calibration_for(workspace / "model.keras").save(workspace / "calibration.npz")
    found = model_choice.model_file(workspace / "model.keras", tta=None)
    assert found.inference == InferenceParams("flip", 100) and found.uncalibrated is None
    assert found.calibration is not None and found.calibration.temperature == 1.5


def test_a_calibration_for_other_views_or_another_model_is_one_warning_naming_the_fix(workspace):
    calibration_for(workspace / "model.keras").save(workspace / "calibration.npz")
    other_views = model_choice.model_file(workspace / "model.keras", tta="none")
    assert other_views.calibration is None and other_views.inference.tta == "none"
    assert other_views.uncalibrated.endswith("; pass --tta flip for unsure answers")
    assert model_choice.UNCALIBRATED in other_views.uncalibrated and "\n" not in other_views.uncalibrated
    (workspace / "model.keras").write_bytes(b"another model")
    other_model = model_choice.model_file(workspace / "model.keras", tta=None)
    assert other_model.calibration is None and "was fitted for another model" in other_model.uncalibrated


def test_a_missing_model_leaves_the_error_to_loading_it(workspace):
    found = model_choice.model_file(workspace / "missing.keras", tta=None)
    assert (found.calibration, found.uncalibrated) == (None, None)  # load_model's one line says it is missing


def test_without_calibration_is_by_design_and_warns_of_nothing(workspace):
    found = model_choice.without_calibration(workspace / "model.keras", InferenceParams("none", 8), "abc")
    assert (found.calibration, found.uncalibrated, found.commit) == (None, None, "abc")


def test_without_params_here_the_views_must_be_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"no params.yaml here .*; run from the repository root, or pass --tta"):
        model_choice.workspace_inference(None)
    found = model_choice.workspace_inference("flip_shift")
    assert found == InferenceParams("flip_shift", model_choice.BATCH_SIZE_WITHOUT_PARAMS)


def test_a_prediction_ranks_its_classes_and_summarises_itself():
    probabilities = np.array([0.1, 0.6, 0.3] + [0.0] * 7, np.float32)
    found = model_choice.Prediction("a.jpg", np.zeros((28, 28), np.uint8), probabilities, True, 2.5, 1.0)
    assert found.ranked()[:2] == [(CLASS_NAMES[1], pytest.approx(0.6)), (CLASS_NAMES[2], pytest.approx(0.3))]
    summary = found.summary()
    assert (summary["class"], summary["unsure"], summary["unsure_threshold"]) == (CLASS_NAMES[1], True, 1.0)
    assert list(summary["probabilities"]) == list(CLASS_NAMES)
    plain = dataclasses.replace(found, unsure=None, unsure_score=None, unsure_threshold=None)
    assert plain.summary()["unsure"] is None
