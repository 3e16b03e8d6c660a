"""The one way a trained model turns images into class probabilities.

`evaluate` (the accuracy in metrics/test.json), `export` (the SavedModel's and TFLite's `serve` signature),
`fmnist predict`, `fmnist serve`, the release smoke test and the benchmark all predict through this module, under
params.yaml's `inference` section, so the numbers reported are the numbers served.

`inference.tta` is the test-time augmentation: `none` predicts each image as it is; `flip` averages the
probabilities of the image and of its left-right mirror, at twice the compute (clothing looks the same mirrored,
and the model trained on random mirror images); `flip_shift` adds both moved by one pixel in each direction, at
ten times the compute.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fmnist.lib.dataset import IMAGE_SHAPE, NUM_CLASSES
from fmnist.lib.params import InferenceParams

WIDTH_AXIS = 2  # images are (N, height, width, channels): flipping this axis mirrors left and right
SHIFTS_1PX = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (rows, columns): down, up, right, left


@dataclass(frozen=True)
class View:
    """One version of the images that is predicted: moved by whole pixels (zeros fill in), maybe mirrored."""

    rows: int = 0
    columns: int = 0
    mirror: bool = False
    weight: float = 1.0  # its share in the average, before normalising


def _views(tta: str) -> tuple[View, ...]:
    plain = (View(), View(mirror=True))
    if tta == "none":
        return (View(),)
    if tta == "flip":
        return plain
    # flip_shift: each image and its mirror, and both moved by 1 px in four directions, the unmoved pair weighing
    # as much as the eight moved views together (they are the images as the dataset centred them).
    moved = tuple(View(r, c, mirror, 0.5) for r, c in SHIFTS_1PX for mirror in (False, True))
    return tuple(View(v.rows, v.columns, v.mirror, 2.0) for v in plain) + moved


VIEWS = {tta: _views(tta) for tta in ("none", "flip", "flip_shift")}  # InferenceParams.tta -> its views


def render(images: Any, view: View) -> Any:
    """`images` (N, 28, 28, 1) as `view` shows them: shifted with zero fill, mirrored."""
    if view.rows or view.columns:
        padded = keras.ops.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])  # (N, 30, 30, 1), zeros around
        height, width = IMAGE_SHAPE[:2]
        top, left = 1 - view.rows, 1 - view.columns
        images = padded[:, top : top + height, left : left + width, :]
    return keras.ops.flip(images, axis=WIDTH_AXIS) if view.mirror else images


def probabilities_graph(model: keras.Model, images: Any, tta: str) -> Any:
    """uint8 images (N, 28, 28, 1) -> float32 probabilities (N, 10), as tensors (inside tf.function or an export).

    The weighted mean of the softmax of every view that `tta` names.
    """
    views = VIEWS[tta]
    total = sum(view.weight for view in views)
    predicted = [
        keras.ops.softmax(model(render(images, view), training=False)) * (view.weight / total) for view in views
    ]
    return predicted[0] if len(predicted) == 1 else sum(predicted[1:], predicted[0])


def compiled(model: keras.Model, tta: str) -> Callable[[Any], Any]:
    """`probabilities_graph` as one traced TensorFlow function for batches of any size (traced once)."""
    signature = [tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name="images")]
    return tf.function(lambda images: probabilities_graph(model, images, tta), input_signature=signature)


class Predictor:
    """A model with its inference recipe: NumPy images in, NumPy probabilities out, in batches.

    Built once per model (tracing takes about a second); calling it is thread-safe, so a server can call it from
    worker threads.
    """

    def __init__(self, model: keras.Model, params: InferenceParams) -> None:
        self.model, self.params = model, params
        self._probabilities = compiled(model, params.tta)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28, 1) uint8 -> (N, 10) float32 class probabilities, each row summing to 1."""
        if images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images of shape (N, 28, 28, 1), got {images.dtype} {images.shape}")
        size = self.params.batch_size
        batches = [self._probabilities(images[i : i + size]).numpy() for i in range(0, len(images), size)]
        return np.concatenate(batches) if batches else np.zeros((0, NUM_CLASSES), np.float32)
