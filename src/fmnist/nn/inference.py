"""The one way a trained model turns images into class probabilities.

`evaluate` (the accuracy in metrics/test.json), `export` (the SavedModel's and TFLite's `serve` signature),
`fmnist predict`, `fmnist serve`, the release smoke test and the benchmark all predict through this module, under
params.yaml's `inference` section, so the numbers reported are the numbers served.

`inference.tta` is the test-time augmentation: `none` predicts each image as it is; `flip` averages the
probabilities of the image and of its left-right mirror, at twice the compute (clothing looks the same mirrored,
and the model trained on random mirror images).
"""

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fmnist.lib.dataset import IMAGE_SHAPE, NUM_CLASSES
from fmnist.lib.params import InferenceParams

WIDTH_AXIS = 2  # images are (N, height, width, channels): flipping this axis mirrors left and right


def views(images: Any, tta: str) -> list[Any]:
    """The versions of a batch that are predicted and averaged: the batch itself, and its mirror for `flip`."""
    return [images] if tta == "none" else [images, keras.ops.flip(images, axis=WIDTH_AXIS)]


def probabilities_graph(model: keras.Model, images: Any, tta: str) -> Any:
    """uint8 images (N, 28, 28, 1) -> float32 probabilities (N, 10), as tensors (inside tf.function or an export)."""
    predicted = [keras.ops.softmax(model(view, training=False)) for view in views(images, tta)]
    return predicted[0] if len(predicted) == 1 else keras.ops.add(*predicted) / 2


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
