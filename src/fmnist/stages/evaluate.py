"""Stage `evaluate`: score the trained model on the full test set.

Writes metrics/test.json (loss, accuracy, macro precision/recall/F1), metrics/per_class.json,
plots/confusion.csv (one `actual,predicted` row per test image, DVC's confusion template) and
data/predictions/test_probabilities.npy ((N, 10) float32, for plot_errors).
"""

import csv
import io

import numpy as np

from fmnist.lib import files, metrics
from fmnist.lib.dataset import CLASS_NAMES, load_split
from fmnist.lib.params import load_params
from fmnist.nn.inference import Predictor
from fmnist.nn.model import load_model


def per_class_report(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    """{class name: {precision, recall, f1, support}} from a confusion matrix."""
    scores = metrics.per_class_scores(matrix)
    return {
        name: {key: float(values[i]) if key != "support" else int(values[i]) for key, values in scores.items()}
        for i, name in enumerate(CLASS_NAMES)
    }


def confusion_csv(true: np.ndarray, predicted: np.ndarray) -> str:
    """One `actual,predicted` row per image, by class name, for DVC's confusion template."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((CLASS_NAMES[t], CLASS_NAMES[p]) for t, p in zip(true, predicted, strict=True))
    return out.getvalue()


def main() -> None:
    params = load_params().inference
    predict = Predictor(load_model(files.MODEL_FILE), params)
    test = load_split("test")
    probabilities = predict(test.images)  # (10000, 10) float32
    predicted = probabilities.argmax(axis=1)
    matrix = metrics.confusion_matrix(test.labels, predicted, len(CLASS_NAMES))
    summary = metrics.summary(probabilities, test.labels)
    files.save_npy(files.PREDICTIONS_FILE, probabilities)
    files.write_json(files.TEST_METRICS_FILE, {"test": summary})
    files.write_json(files.PER_CLASS_METRICS_FILE, per_class_report(matrix))
    files.write_bytes(files.CONFUSION_FILE, confusion_csv(test.labels, predicted).encode())
    print(f"evaluate: test accuracy {summary['accuracy']:.4f}, loss {summary['loss']:.4f}")
