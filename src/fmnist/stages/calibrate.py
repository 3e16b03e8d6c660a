"""Stage `calibrate`: fit, for the trained model, the temperature of its probabilities and when it answers unsure.

Everything is fitted with the served inference (the `inference` params, test-time augmentation included) and
chosen on the validation split only (fmnist.lib.calibration says what and why; docs/unsure.md how to read it):
- the temperature, by the negative log-likelihood of the validation labels;
- the activation statistics' class means and shared covariance, on the training split;
- each part of the unsure score's validation median and tail, and the threshold: the score below which
  `unsure.coverage` of the validation images lie.

Writes models/calibration.npz, beside the model it belongs to (with the model's MD5: with another model it is
refused).
"""

import dataclasses

import numpy as np

from fmnist.lib import calibration as fitting
from fmnist.lib import files
from fmnist.lib.calibration import Calibration
from fmnist.lib.files import NUM_CLASSES, load_split
from fmnist.lib.params import load_params
from fmnist.nn import inference
from fmnist.nn.inference import Predictor
from fmnist.nn.model import load_model


def fitted(predict: Predictor, train_images: np.ndarray, train_labels: np.ndarray, coverage: float) -> Calibration:
    """The calibration of `predict`'s model: statistics fitted on the training images, the rest on validation."""
    val = load_split("val", files.PREPARED_DIR)
    parts = predict.components(val.images)
    temperature = fitting.fit_temperature(parts["probabilities"], val.labels)
    statistics = predict.components(train_images)["statistics"]
    class_means, whitening = fitting.fit_class_gaussians(statistics, train_labels, NUM_CLASSES)
    energy = np.asarray(inference.energy(parts["logits"]))
    distance = np.asarray(inference.nearest_class_distance(parts["statistics"], class_means, whitening))
    energy_centre, energy_tail = fitting.centre_and_tail(energy, fitting.ENERGY_TAIL)
    distance_centre, distance_tail = fitting.centre_and_tail(distance, fitting.DISTANCE_TAIL)
    unthresholded = Calibration(
        model_md5=fitting.file_md5(files.MODEL_FILE),
        tta=predict.params.tta,
        temperature=temperature,
        energy_centre=energy_centre,
        energy_tail=energy_tail,
        class_means=class_means,
        whitening=whitening,
        distance_centre=distance_centre,
        distance_tail=distance_tail,
        threshold=np.inf,
        coverage=coverage,
    )
    scores = np.asarray(inference.answers_graph(parts, unthresholded)["unsure_score"])
    return dataclasses.replace(unthresholded, threshold=fitting.coverage_threshold(scores, coverage))


def main() -> None:
    params = load_params()
    predict = Predictor(load_model(files.MODEL_FILE), params.inference)
    train = load_split("train", files.PREPARED_DIR)
    found = fitted(predict, train.images, train.labels, params.unsure.coverage)
    found.save(files.CALIBRATION_FILE)
    print(
        f"calibrate: temperature {found.temperature:.3f}, unsure above {found.threshold:.3f} "
        f"({found.coverage:.0%} of validation answered sure) -> {files.CALIBRATION_FILE}"
    )
