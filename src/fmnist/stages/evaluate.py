"""Stage `evaluate`: score the trained model on the validation split and on the full test set, alike.

Both with the `inference` params (test-time augmentation included), so that a choice made on validation (a
sweep's winner, a candidate) is judged on the figure the test set will give. Writes metrics/val.json (loss,
accuracy, macro precision/recall/F1, each class's recall) and plots/val_confusion.csv for the validation split;
metrics/test.json, metrics/per_class.json and plots/confusion.csv for the test set (one `actual,predicted` row per
image, DVC's confusion template); data/predictions/test_probabilities.npy ((N, 10) float32, for plot_errors);
metrics/own_test.json for the user's own held-out images, if prepare held some out (how many, how many right, per
class).
"""

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.lib import files, metrics
from fmnist.lib.dataset import CLASS_NAMES, Split, load_split
from fmnist.lib.own_data import OWN_TEST_SPLIT
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


def evaluated(predict: Predictor, split: Split) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(probabilities (N, 10) float32, predicted classes (N,), summary metrics) of the model on one split."""
    probabilities = predict(split.images)
    return probabilities, probabilities.argmax(axis=1), metrics.summary(probabilities, split.labels)


def own_test_answers(
    predict: Callable[[np.ndarray], np.ndarray], root: Path = files.PREPARED_DIR
) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels (N,), probabilities (N, 10)) of the own held-out images, None if prepare held none out.

    `predict` maps uint8 images (N, 28, 28, 1) to probabilities: a fmnist.nn.inference.Predictor of any model, so
    two models can be compared on the same own images (fmnist.lib.stats.paired).
    """
    if not files.split_files(OWN_TEST_SPLIT, root)[0].is_file():
        return None
    split = load_split(OWN_TEST_SPLIT, root)
    return split.labels, predict(split.images)


def own_test_report(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """{images, correct, accuracy, loss, classes: {name: {images, correct}}} for the classes among `labels`."""
    right = probabilities.argmax(axis=1) == labels
    classes = {
        CLASS_NAMES[label]: {"images": int(np.sum(labels == label)), "correct": int(np.sum(right[labels == label]))}
        for label in np.unique(labels)
    }
    return {
        "images": len(labels),
        "correct": int(right.sum()),
        "accuracy": float(right.mean()),
        "loss": metrics.cross_entropy(probabilities, labels),
        "classes": classes,
    }


def main() -> None:
    params = load_params().inference
    predict = Predictor(load_model(files.MODEL_FILE), params)
    val, test = load_split("val"), load_split("test")
    _, val_predicted, val_summary = evaluated(predict, val)
    val_matrix = metrics.confusion_matrix(val.labels, val_predicted, len(CLASS_NAMES))
    recall = {name: scores["recall"] for name, scores in per_class_report(val_matrix).items()}
    files.write_json(files.VAL_METRICS_FILE, {"val": {**val_summary, "recall": recall}})
    files.write_bytes(files.VAL_CONFUSION_FILE, confusion_csv(val.labels, val_predicted).encode())
    probabilities, predicted, summary = evaluated(predict, test)
    files.save_npy(files.PREDICTIONS_FILE, probabilities)
    files.write_json(files.TEST_METRICS_FILE, {"test": summary})
    matrix = metrics.confusion_matrix(test.labels, predicted, len(CLASS_NAMES))
    files.write_json(files.PER_CLASS_METRICS_FILE, per_class_report(matrix))
    files.write_bytes(files.CONFUSION_FILE, confusion_csv(test.labels, predicted).encode())
    own = own_test_answers(predict)
    files.write_json(files.OWN_TEST_METRICS_FILE, {"own_test": own_test_report(*own) if own else {"images": 0}})
    print(
        f"evaluate: validation accuracy {val_summary['accuracy']:.4f}; "
        f"test accuracy {summary['accuracy']:.4f}, loss {summary['loss']:.4f}"
    )
