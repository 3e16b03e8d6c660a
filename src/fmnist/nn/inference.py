"""The one way a trained model turns images into answers: class probabilities and, once calibrated, "unsure".

`evaluate` (the accuracy in metrics/test.json), `export` (the SavedModel's and TFLite's `serve` signature),
`fmnist predict`, `fmnist serve`, the release smoke test and the bench (bench/) all predict through this module, under
params.yaml's `inference` section, so the numbers reported are the numbers served.

`inference.tta` is the test-time augmentation: `none` predicts each image as it is; `flip` averages the
probabilities of the image and of its left-right mirror, at twice the compute (clothing looks the same mirrored,
and the model trained on random mirror images); `flip_shift` adds both moved by one pixel in each direction, at
ten times the compute.

Besides the probabilities, the views yield what the unsure score is made of (fmnist.lib.calibration): the logits,
averaged like the probabilities, for the energy, and the statistics of the network's activations in the image as
it is (the first view), each channel's mean and spread over space in the output of every pooling layer (one map per
resolution, whatever the architecture). Pooled maps and one view keep the unsure score's share of the inference
time small: the pooled maps have a quarter of the values of those entering the poolings, and the mirror image's
statistics tell no more about whether it is a garment.
With a Calibration (the calibrate stage's), the probabilities are temperature-scaled and every image gets its
unsure score and whether it passes the threshold, in the same graph, so exports carry them too.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from fmnist.lib.answers import Answers
from fmnist.lib.calibration import Calibration
from fmnist.lib.files import IMAGE_SHAPE
from fmnist.lib.params import InferenceParams

WIDTH_AXIS = 2  # images are (N, height, width, channels): flipping this axis mirrors left and right
SPACE_AXES = (1, 2)  # a feature map's height and width
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
        padded = ops.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])  # (N, 30, 30, 1), zeros around
        height, width = IMAGE_SHAPE[:2]
        top, left = 1 - view.rows, 1 - view.columns
        images = padded[:, top : top + height, left : left + width, :]
    return ops.flip(images, axis=WIDTH_AXIS) if view.mirror else images


def with_feature_maps(model: keras.Model) -> keras.Model:
    """The model with more outputs: its logits (N, 10), then the output of each pooling layer, (N, H, W, C) from the
    finest resolution to the coarsest."""
    pooled = [layer.output for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    return keras.Model(model.inputs, [model.outputs[0], *pooled], name=f"{model.name}_with_maps")


def statistics(feature_maps: list[Any]) -> Any:
    """Each channel's mean and standard deviation over space, of every map: (N, D), D = 2 x all channels."""
    parts = [ops.mean(m, axis=SPACE_AXES) for m in feature_maps] + [ops.std(m, axis=SPACE_AXES) for m in feature_maps]
    return ops.concatenate([ops.cast(part, "float32") for part in parts], axis=1)


def components_graph(mapped: keras.Model, images: Any, tta: str) -> dict[str, Any]:
    """uint8 images (N, 28, 28, 1) -> what answers are made of: the weighted means over `tta`'s views of the
    probabilities (N, 10) float32 (the softmax of each view) and of the logits (N, 10), and the statistics (N, D)
    of the first view, the images as they are.

    `mapped` is `with_feature_maps(model)`. Works on tensors (inside tf.function or an export) and on arrays.
    """
    views = VIEWS[tta]
    total = sum(view.weight for view in views)
    sums: dict[str, Any] = {}
    for view in views:
        logits, *maps = mapped(render(images, view), training=False)
        share = view.weight / total
        for name, value in (("probabilities", ops.softmax(logits)), ("logits", logits)):
            sums[name] = value * share if name not in sums else sums[name] + value * share
        if "statistics" not in sums:
            sums["statistics"] = statistics(maps)
    return sums


def energy(logits: Any) -> Any:
    """-logsumexp of each row of logits (N, 10) -> (N,): high where no class fits (Liu et al. 2020)."""
    return -ops.logsumexp(logits, axis=1)


def nearest_class_distance(statistics: Any, class_means: np.ndarray, whitening: np.ndarray) -> Any:
    """Squared Mahalanobis distance of each row of (N, D) statistics to the nearest of the (10, D) class means,
    |(x - mean_c) @ L|^2 with the whitening L: (N,).

    One (N, D) @ (D, D) product, not one per class: with m the mean of the class means, (x - mean_c) @ L is
    (x - m) @ L - (mean_c - m) @ L, the second term computed here once. m is subtracted before L multiplies so that
    an export storing L in float16 errs by a share of the distances rather than of |x @ L|, which is far larger.
    """
    centre = class_means.mean(axis=0)  # (D,)
    whitened_means = ((class_means - centre) @ whitening).astype(np.float32)  # (10, D)
    whitened = ops.matmul(statistics - ops.convert_to_tensor(centre), ops.convert_to_tensor(whitening))  # (N, D)
    differences = whitened[:, None, :] - ops.convert_to_tensor(whitened_means)[None]  # (N, 10, D)
    return ops.min(ops.sum(ops.square(differences), axis=2), axis=1)


def answers_graph(components: dict[str, Any], calibration: Calibration) -> dict[str, Any]:
    """Calibrated probabilities (N, 10), the unsure score (N,) and whether it is above the threshold (N,) bool."""
    scaled = ops.log(ops.clip(components["probabilities"], 1e-12, 1.0)) / calibration.temperature
    distance = nearest_class_distance(components["statistics"], calibration.class_means, calibration.whitening)
    score = ops.maximum(  # each part in units of its own validation tail: 0 at the median, 1 at the tail
        (energy(components["logits"]) - calibration.energy_centre)
        / (calibration.energy_tail - calibration.energy_centre),
        (distance - calibration.distance_centre) / (calibration.distance_tail - calibration.distance_centre),
    )
    return {"probabilities": ops.softmax(scaled), "unsure_score": score, "unsure": score > calibration.threshold}


class Predictor:
    """A model with its inference recipe (and calibration, if any): NumPy images in, Answers out, in batches.

    Built once per model (tracing takes about a second); calling it is thread-safe, so a server can call it from
    worker threads.
    """

    def __init__(self, model: keras.Model, params: InferenceParams, calibration: Calibration | None = None) -> None:
        self.model, self.params, self.calibration = model, params, calibration
        mapped = with_feature_maps(model)
        signature = [tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name="images")]

        def answer(images: Any) -> dict[str, Any]:
            parts = components_graph(mapped, images, params.tta)
            if calibration is None:
                return {"probabilities": parts["probabilities"]}
            return answers_graph(parts, calibration)

        self._answer = tf.function(answer, input_signature=signature)
        self._components = tf.function(
            lambda images: components_graph(mapped, images, params.tta), input_signature=signature
        )

    def __call__(self, images: np.ndarray) -> Answers:
        """(N, 28, 28, 1) uint8 -> the Answers of the N images."""
        found = self._batched(self._answer, images)
        return Answers(found["probabilities"], found.get("unsure_score"), found.get("unsure"))

    def components(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """(N, 28, 28, 1) uint8 -> uncalibrated probabilities (N, 10), logits (N, 10), statistics (N, D)."""
        return self._batched(self._components, images)

    def _batched(self, function: Callable[[Any], dict[str, Any]], images: np.ndarray) -> dict[str, np.ndarray]:
        if images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images of shape (N, 28, 28, 1), got {images.dtype} {images.shape}")
        if len(images) == 0:  # one blank image answered and dropped: every output keeps its shape, (0, ...)
            return {
                name: found[:0]
                for name, found in self._batched(function, np.zeros((1, *IMAGE_SHAPE), np.uint8)).items()
            }
        size = self.params.batch_size
        batches = [function(images[i : i + size]) for i in range(0, len(images), size)]
        return {name: np.concatenate([batch[name].numpy() for batch in batches]) for name in batches[0]}
