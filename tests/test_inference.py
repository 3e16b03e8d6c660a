"""fmnist.nn.inference: the one prediction path, with and without the mirror image."""

import keras
import numpy as np
import pytest

from fmnist.lib.params import InferenceParams
from fmnist.nn.inference import Predictor
from fmnist.nn.model import build_model
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module")
def model_and_images():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    return build_model(TINY_MODEL, seed=0), rng.integers(0, 256, (37, 28, 28, 1), dtype=np.uint8)


def test_flip_averages_each_image_with_its_mirror_image(model_and_images):
    model, images = model_and_images
    plain = Predictor(model, InferenceParams(tta="none", batch_size=10))
    flipped = Predictor(model, InferenceParams(tta="flip", batch_size=10))
    expected = (plain(images) + plain(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(flipped(images), expected, atol=1e-6)
    assert not np.allclose(plain(images), expected, atol=1e-4)  # the mirror changes something: the test can fail


def test_results_do_not_depend_on_the_batch_size_and_rows_sum_to_one(model_and_images):
    model, images = model_and_images
    small, large = (Predictor(model, InferenceParams(tta="flip", batch_size=n))(images) for n in (4, 1000))
    assert small.shape == (37, 10) and small.dtype == np.float32
    np.testing.assert_allclose(small, large, atol=1e-6)
    np.testing.assert_allclose(small.sum(axis=1), 1, atol=1e-5)


def test_no_images_give_no_rows_and_wrong_images_a_clear_error(model_and_images):
    predict = Predictor(model_and_images[0], InferenceParams(tta="none", batch_size=8))
    assert predict(np.zeros((0, 28, 28, 1), np.uint8)).shape == (0, 10)
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
    unmoved = plain(images) + plain(images[:, :, ::-1])
    shifted = sum(
        plain(moved(view, rows, columns))
        for rows, columns in ((1, 0), (-1, 0), (0, 1), (0, -1))
        for view in (images, images[:, :, ::-1])
    )
    expected = (2 * unmoved + 0.5 * shifted) / (2 * 2 + 0.5 * 8)
    found = Predictor(model, InferenceParams(tta="flip_shift", batch_size=64))(images)
    np.testing.assert_allclose(found, expected, atol=1e-6)
