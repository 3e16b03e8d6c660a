"""fmnist.nn.inference: the one prediction path, with and without the mirror image, with and without calibration."""

import dataclasses

import keras
import numpy as np
import pytest
from scipy.special import logsumexp

from fmnist.lib.calibration import Calibration, fit_class_gaussians, temperature_scaled
from fmnist.lib.params import InferenceParams
from fmnist.nn.inference import Predictor, with_feature_maps
from fmnist.nn.model import build_model
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module")
def model_and_images():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    return build_model(TINY_MODEL, seed=0), rng.integers(0, 256, (37, 28, 28, 1), dtype=np.uint8)


def probabilities(predict: Predictor, images: np.ndarray) -> np.ndarray:
    return predict(images).probabilities


def test_flip_averages_each_image_with_its_mirror_image(model_and_images):
    model, images = model_and_images
    plain = Predictor(model, InferenceParams(tta="none", batch_size=10))
    flipped = Predictor(model, InferenceParams(tta="flip", batch_size=10))
    expected = (probabilities(plain, images) + probabilities(plain, images[:, :, ::-1])) / 2
    np.testing.assert_allclose(probabilities(flipped, images), expected, atol=1e-6)
    assert not np.allclose(probabilities(plain, images), expected, atol=1e-4)  # the mirror changes something


def test_results_do_not_depend_on_the_batch_size_and_rows_sum_to_one(model_and_images):
    model, images = model_and_images
    small, large = (probabilities(Predictor(model, InferenceParams("flip", n)), images) for n in (4, 1000))
    assert small.shape == (37, 10) and small.dtype == np.float32
    np.testing.assert_allclose(small, large, atol=1e-6)
    np.testing.assert_allclose(small.sum(axis=1), 1, atol=1e-5)


def test_no_images_give_no_rows_and_wrong_images_a_clear_error(model_and_images):
    predict = Predictor(model_and_images[0], InferenceParams(tta="none", batch_size=8))
    found = predict(np.zeros((0, 28, 28, 1), np.uint8))
    assert found.probabilities.shape == (0, 10) and found.unsure is None and found.unsure_score is None
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, 28, 28, 1\), got float32"):
        predict(np.zeros((2, 28, 28, 1), np.float32))


def moved(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`images` moved down by `rows` and right by `columns` pixels, zeros filling in (NumPy, for comparison)."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    source = images[:, max(0, -rows) : height - max(0, rows), max(0, -columns) : width - max(0, columns)]
    out[:, max(0, rows) : height - max(0, -rows), max(0, columns) : width - max(0, -columns)] = source
    return out


def test_flip_shift_is_the_weighted_mean_of_ten_views_with_the_unmoved_pair_weighing_half(model_and_images):
    model, images = model_and_images
    plain = Predictor(model, InferenceParams(tta="none", batch_size=64))
    unmoved = probabilities(plain, images) + probabilities(plain, images[:, :, ::-1])
    shifted = sum(
        probabilities(plain, moved(view, rows, columns))
        for rows, columns in ((1, 0), (-1, 0), (0, 1), (0, -1))
        for view in (images, images[:, :, ::-1])
    )
    expected = (2 * unmoved + 0.5 * shifted) / (2 * 2 + 0.5 * 8)
    found = probabilities(Predictor(model, InferenceParams(tta="flip_shift", batch_size=64)), images)
    np.testing.assert_allclose(found, expected, atol=1e-6)


# --- What the unsure score is made of, and the calibrated answers ------------------------------------------------


def feature_maps(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(logits, the output of every pooling layer), from Keras directly: the reference."""
    found = with_feature_maps(model).predict(images, verbose=0)
    return found[0], found[1:]


def test_the_statistics_are_each_channels_mean_and_spread_after_every_pooling(model_and_images):
    model, images = model_and_images
    pooled = [tuple(layer.output.shape[1:]) for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    logits, maps = feature_maps(model, images)
    assert [m.shape[1:] for m in maps] == pooled
    assert len({m.shape[1] for m in maps}) == len(maps)  # one map per resolution
    expected = np.concatenate([m.mean(axis=(1, 2)) for m in maps] + [m.std(axis=(1, 2)) for m in maps], axis=1)
    found = Predictor(model, InferenceParams(tta="none", batch_size=16)).components(images)
    np.testing.assert_allclose(found["statistics"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(found["logits"], logits, atol=1e-5)


def test_the_statistics_are_the_unmirrored_images_whatever_the_views(model_and_images):
    model, images = model_and_images
    expected = Predictor(model, InferenceParams(tta="none", batch_size=16)).components(images)["statistics"]
    for tta in ("flip", "flip_shift"):
        found = Predictor(model, InferenceParams(tta=tta, batch_size=16)).components(images)
        np.testing.assert_allclose(found["statistics"], expected, rtol=1e-5, atol=1e-6)
    mirrored = Predictor(model, InferenceParams(tta="none", batch_size=16)).components(images[:, :, ::-1])
    assert not np.allclose(mirrored["statistics"], expected, atol=1e-4)  # the mirror's would differ


def calibration_for(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> Calibration:
    """A calibration of arbitrary but plausible numbers for `model`, its statistics fitted on `images`."""
    statistics = Predictor(model, InferenceParams("flip", 64)).components(images)["statistics"]
    means, whitening = fit_class_gaussians(statistics, labels, 10)
    return Calibration(
        model_md5="0" * 32,
        tta="flip",
        temperature=0.7,
        energy_centre=-2.4,
        energy_tail=-2.2,
        class_means=means,
        whitening=whitening,
        distance_centre=30.0,
        distance_tail=80.0,
        threshold=1.0,
        coverage=0.95,
    )


def test_calibrated_answers_keep_each_images_class_and_score_as_the_formula_says(model_and_images):
    model, images = model_and_images
    labels = np.arange(len(images)) % 10
    calibration = calibration_for(model, images, labels)
    plain = Predictor(model, InferenceParams("flip", 16))
    parts = plain.components(images)
    found = Predictor(model, InferenceParams("flip", 16), calibration)(images)

    np.testing.assert_allclose(found.probabilities, temperature_scaled(parts["probabilities"], 0.7), atol=1e-5)
    np.testing.assert_array_equal(found.probabilities.argmax(axis=1), parts["probabilities"].argmax(axis=1))
    # The score from the parts, in NumPy: energy and the nearest class's Mahalanobis distance, each in its units.
    energy = -logsumexp(parts["logits"], axis=1)
    precision = calibration.whitening.astype(np.float64) @ calibration.whitening.T
    centred = parts["statistics"][:, None, :] - calibration.class_means[None]  # (N, 10, D)
    distance = np.einsum("ncd,de,nce->nc", centred, precision, centred).min(axis=1)
    expected = np.maximum((energy + 2.4) / 0.2, (distance - 30.0) / 50.0)
    np.testing.assert_allclose(found.unsure_score, expected, rtol=1e-3)
    np.testing.assert_array_equal(found.unsure, found.unsure_score > 1.0)

    sharper = dataclasses.replace(calibration, threshold=float(np.median(found.unsure_score)))
    assert Predictor(model, InferenceParams("flip", 16), sharper)(images).unsure.sum() == len(images) // 2
