"""The export stage's formats, loaded back the way their users load them, against the Keras model."""

import dataclasses
import hashlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from fmnist.lib.calibration import load_for
from fmnist.lib.params import InferenceParams
from fmnist.nn.inference import VIEWS, Predictor
from fmnist.nn.model import build_model, load_model, save_model
from fmnist.stages.export import OUTPUTS, saved_model_answers, tflite_answers, tflite_bytes, write_saved_model
from tests.helpers import TINY_MODEL, calibrate_beside, calibrated_tiny_model


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, garments):
    """(a calibrated tiny model's path, test images): trained briefly so that its answers vary, with the layers
    that act only while training (the best preset's random shifts and erasing), identities in every export."""
    params = dataclasses.replace(TINY_MODEL, shift_px=1, erase_prob=0.5)
    path = calibrated_tiny_model(tmp_path_factory.mktemp("model"), garments, params=params)
    return path, garments["t10k-images-idx3-ubyte"][:200, ..., None]


@pytest.fixture(scope="module", params=sorted(VIEWS))
def exported(request, calibrated, garments):
    """(the Keras model's Answers, the SavedModel's directory, test images, parameter count) for each test-time
    augmentation that params.yaml's `inference.tta` offers, calibrated with its own views."""
    path, images = calibrated
    train = garments["train-images-idx3-ubyte"][..., None], garments["train-labels-idx1-ubyte"]
    calibrate_beside(path, (train[0][:200], train[1][:200]), (train[0][200:], train[1][200:]), request.param)
    model, calibration = load_model(path), load_for(path)
    reference = Predictor(model, InferenceParams(tta=request.param, batch_size=64), calibration)(images)
    target = path.parent / f"saved_model_{request.param}"
    write_saved_model(model, target, request.param, calibration)
    return reference, target, images, model.count_params()


def test_saved_model_serves_what_the_keras_model_answers(exported):
    reference, saved_model, images, _ = exported
    found = saved_model_answers(saved_model, images, batch_size=64)
    assert set(found) == set(OUTPUTS) and found["probabilities"].shape == (200, 10)
    np.testing.assert_allclose(found["probabilities"], reference.probabilities, atol=1e-6)
    np.testing.assert_allclose(found["unsure_score"], reference.unsure_score, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(found["unsure"], reference.unsure)
    assert 0 < reference.unsure.sum() < len(images)  # both answers occur: the comparison can fail


def test_tflite_float32_matches_and_float16_weights_halve_the_file_and_answer_alike(exported):
    reference, saved_model, images, parameters = exported
    float32, float16 = (tflite_bytes(saved_model, float16_weights=half) for half in (False, True))
    np.testing.assert_allclose(tflite_answers(float32, images)["probabilities"], reference.probabilities, atol=1e-5)
    assert len(float32) - len(float16) > 1.5 * parameters  # 4 bytes a weight -> 2
    half = tflite_answers(float16, images)
    assert np.mean(half["unsure"] == reference.unsure) >= 0.98
    np.testing.assert_allclose(half["probabilities"], reference.probabilities, atol=0.02)


# What the export stage does with models/model.keras, in a process of its own: the SHA-256 of the float TFLite file.
EXPORT_IN_A_NEW_PROCESS = """
import hashlib, sys
from pathlib import Path
from fmnist.lib.calibration import load_for
from fmnist.nn.model import load_model
from fmnist.stages.export import tflite_bytes, write_saved_model
model = Path(sys.argv[1])
write_saved_model(load_model(model), Path(sys.argv[2]), "none", load_for(model))
print(hashlib.sha256(tflite_bytes(Path(sys.argv[2]), float16_weights=False)).hexdigest())
"""


@pytest.mark.slow
def test_a_retrained_identical_model_exports_a_byte_identical_tflite_file(tmp_path, garments):
    """docs/models.md's promise: a byte-identical model.keras gives byte-identical TFLite files, whichever process
    exports it (TensorFlow's SavedModel writer records things that change from process to process)."""
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), tmp_path / "model.keras")
    train = garments["train-images-idx3-ubyte"][..., None], garments["train-labels-idx1-ubyte"]
    calibrate_beside(tmp_path / "model.keras", (train[0][:200], train[1][:200]), (train[0][200:], train[1][200:]))
    model = tmp_path / "model.keras"
    write_saved_model(load_model(model), tmp_path / "here", "none", load_for(model))
    here = hashlib.sha256(tflite_bytes(tmp_path / "here", float16_weights=False)).hexdigest()
    args = [sys.executable, "-c", EXPORT_IN_A_NEW_PROCESS, str(tmp_path / "model.keras"), str(tmp_path / "there")]
    there = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()[-1]
    assert there == here
