"""The export stage's formats, loaded back the way their users load them, against the Keras model."""

import hashlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from fmnist.lib.params import InferenceParams
from fmnist.nn.inference import VIEWS, Predictor
from fmnist.nn.model import build_model, load_model, save_model
from fmnist.stages.export import saved_model_probabilities, tflite_bytes, tflite_probabilities, write_saved_model
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module", params=sorted(VIEWS))
def exported(request, tmp_path_factory, garments):
    """(Keras probabilities, the SavedModel's directory, test images, parameter count) for a small random model,
    for each test-time augmentation that params.yaml's `inference.tta` offers."""
    keras.utils.set_random_seed(0)
    model = build_model(TINY_MODEL, seed=0)
    images = garments["t10k-images-idx3-ubyte"][:200, ..., None]
    reference = Predictor(model, InferenceParams(tta=request.param, batch_size=64))(images)  # what evaluate reports
    target = tmp_path_factory.mktemp("export") / "saved_model"
    write_saved_model(model, target, tta=request.param)
    return reference, target, images, model.count_params()


def test_saved_model_serves_probabilities_of_uint8_images_as_keras_does(exported):
    reference, saved_model, images, _ = exported
    probabilities = saved_model_probabilities(saved_model, images, batch_size=64)
    assert probabilities.shape == (200, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(probabilities, reference, atol=1e-6)


def test_tflite_float_matches_and_int8_weights_are_smaller_and_close(exported):
    reference, saved_model, images, parameters = exported
    float_model, int8_model = (
        tflite_bytes(saved_model, int8_weights=False),
        tflite_bytes(saved_model, int8_weights=True),
    )
    np.testing.assert_allclose(tflite_probabilities(float_model, images), reference, atol=1e-5)
    assert len(float_model) - len(int8_model) > 2 * parameters  # 4 bytes a weight -> 1 (biases stay float32)
    np.testing.assert_allclose(tflite_probabilities(int8_model, images), reference, atol=0.05)


# What the export stage does with models/model.keras, in a process of its own: the SHA-256 of the float TFLite file.
EXPORT_IN_A_NEW_PROCESS = """
import hashlib, sys
from pathlib import Path
from fmnist.nn.model import load_model
from fmnist.stages.export import tflite_bytes, write_saved_model
write_saved_model(load_model(Path(sys.argv[1])), Path(sys.argv[2]), tta="flip")
print(hashlib.sha256(tflite_bytes(Path(sys.argv[2]), int8_weights=False)).hexdigest())
"""


@pytest.mark.slow
def test_a_retrained_identical_model_exports_a_byte_identical_tflite_file(tmp_path):
    """docs/models.md's promise: a byte-identical model.keras gives byte-identical TFLite files, whichever process
    exports it (TensorFlow's SavedModel writer records things that change from process to process)."""
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), tmp_path / "model.keras")
    write_saved_model(load_model(tmp_path / "model.keras"), tmp_path / "here", tta="flip")
    here = hashlib.sha256(tflite_bytes(tmp_path / "here", int8_weights=False)).hexdigest()
    args = [sys.executable, "-c", EXPORT_IN_A_NEW_PROCESS, str(tmp_path / "model.keras"), str(tmp_path / "there")]
    there = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()[-1]
    assert there == here
