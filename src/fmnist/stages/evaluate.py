"""Stage `evaluate`: score the served model (calibration included) on validation, on the test set and on images
that are not garments, alike.

Everything goes through the same Predictor as `fmnist predict` and `fmnist serve` (the `inference` params, the
calibration of models/calibration.npz), so a choice made on validation is judged on the figures the test set
will give, and the figures are what users get. Writes:
- what a review decides on, for `dvc metrics diff` (each file's keys flat, "accuracy" first):
  metrics/val.json (accuracy, loss, macro_f1) and metrics/test.json (the same, and how far the confidence can be
  trusted: ece and brier, the share answered sure (coverage) and their accuracy, the share of photo-like test
  garments that stay sure, and the AUROC and share answered unsure of the worst not-garment set);
  metrics/own_test.json for the user's own held-out images, if prepare held some out;
- plots/per_class.csv (each class's precision, recall, F1 on validation and test), plots/calibration.csv (ECE,
  loss and Brier before and after calibration), plots/reliability.csv (test accuracy against confidence, 15
  bins), plots/risk_coverage.csv (the test error among the surest answers at each coverage) and
  plots/not_garments.csv (per set of data/not_garments/report: AUROC against the test images, FPR at 95% TPR,
  share answered unsure, a photo the conversion refuses counting as unsure);
- answers/{val,test,not_garments}.csv: each image's answer (fmnist.lib.answers), what reviews compare;
- data/predictions/, for plot_errors: test_probabilities.npy ((N, 10) float32, calibrated), test_uncalibrated.npy
  (before calibration) and test_unsure_scores.npy ((N,) float32).
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.lib import answers, files, metrics, photo
from fmnist.lib.answers import Answers
from fmnist.lib.calibration import load_for, temperature_scaled
from fmnist.lib.files import CLASS_NAMES, Split, load_split
from fmnist.lib.own_data import OWN_TEST_SPLIT
from fmnist.lib.params import load_params
from fmnist.nn.inference import Predictor
from fmnist.nn.model import load_model

PHOTO_GARMENTS = 2000  # test images made into photo-like JPEGs (the first ones): how many stay sure once converted


def per_class_rows(split: str, labels: np.ndarray, predicted: np.ndarray) -> list[dict[str, Any]]:
    """plots/per_class.csv's rows of one split: each class's precision, recall, F1 and support."""
    scores = metrics.per_class_scores(metrics.confusion_matrix(labels, predicted, len(CLASS_NAMES)))
    return [
        {
            "split": split,
            "class": name,
            **{key: float(scores[key][i]) for key in ("precision", "recall", "f1")},
            "support": int(scores["support"][i]),
        }
        for i, name in enumerate(CLASS_NAMES)
    ]


def split_summary(found: Answers, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, loss and macro-F1 of the (calibrated) probabilities."""
    summary = metrics.summary(found.probabilities, labels)
    return {key: summary[key] for key in ("accuracy", "loss", "macro_f1")}


def unsure_summary(found: Answers, labels: np.ndarray) -> dict[str, float]:
    """The test figures of calibration and of the unsure answers (see the module docstring)."""
    assert found.unsure is not None  # evaluate always has a calibration
    sure = ~found.unsure
    right = found.probabilities.argmax(axis=1) == labels
    return {
        "ece": metrics.ece(found.probabilities, labels),
        "brier": metrics.brier(found.probabilities, labels),
        "coverage": float(sure.mean()),
        "sure_accuracy": float(right[sure].mean()) if sure.any() else 0.0,
    }


def calibration_rows(served: np.ndarray, uncalibrated: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """plots/calibration.csv's rows: ECE, loss and Brier of the test probabilities before and after calibration."""
    return [
        {
            "probabilities": name,
            "ece": metrics.ece(probabilities, labels),
            "loss": metrics.cross_entropy(probabilities, labels),
            "brier": metrics.brier(probabilities, labels),
        }
        for name, probabilities in (("before calibration", uncalibrated), ("served", served))
    ]


def before_calibration(probabilities: np.ndarray, predict: Predictor) -> np.ndarray:
    """The probabilities before temperature scaling: scaling by 1/T undoes scaling by T (each row renormalised)."""
    assert predict.calibration is not None
    return temperature_scaled(probabilities, 1 / predict.calibration.temperature)


def photo_garments_sure(predict: Predictor, test: Split, count: int = PHOTO_GARMENTS) -> float:
    """The share of the first `count` test images that stay sure once made into photos and converted back."""
    photos = [photo.decode(photo.varied_photo(image[..., 0], i)) for i, image in enumerate(test.images[:count])]
    unsure = predict(np.stack(photos)[..., None]).unsure
    assert unsure is not None
    return float(1 - unsure.mean())


def not_garment_sets(root: Path = files.NOT_GARMENTS_DIR / "report") -> dict[str, tuple[np.ndarray, int]]:
    """{set: (images (M, 28, 28, 1) uint8, photos the conversion refused)} of the not-garment report parts."""
    refused = json.loads((root.parent / "refused.json").read_text())[root.name]
    return {path.stem: (files.load_npy(path), refused.get(path.stem, 0)) for path in sorted(root.glob("*.npy"))}


def not_garment_report(
    predict: Predictor, test_scores: np.ndarray, sets: dict[str, tuple[np.ndarray, int]]
) -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray, int]]]:
    """(a row per set: AUROC, FPR at 95% TPR, share unsure, images; {set: (scores, unsure flags, refused)}).

    A refused photo is unsure and ranks above every scored image (it can never be taken for a garment).
    """
    rows, per_image = [], {}
    for name, (images, refused) in sets.items():
        found = predict(images)
        assert found.unsure_score is not None and found.unsure is not None
        scores = np.concatenate([found.unsure_score, np.full(refused, np.inf)])
        rows.append(
            {
                "set": name,
                "auroc": metrics.auroc(test_scores, scores),
                "fpr_at_95_tpr": metrics.fpr_at_tpr(test_scores, scores),
                "unsure": float((found.unsure.sum() + refused) / len(scores)),
                "images": len(scores),
            }
        )
        per_image[name] = (found.unsure_score, found.unsure, refused)
    return rows, per_image


def own_test_answers(
    predict: Callable[[np.ndarray], np.ndarray], root: Path = files.PREPARED_DIR
) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels (N,), probabilities (N, 10)) of the own held-out images, None if prepare held none out.

    `predict` maps uint8 images (N, 28, 28, 1) to probabilities, for any model, so that two models can be compared
    on the same own images (fmnist.lib.stats.paired).
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


def csv_rows(rows: list[dict[str, Any]]) -> bytes:
    """A header and one line per row (the keys of the first row, in order): a DVC plot's data."""
    keys = list(rows[0])
    lines = [",".join(keys)] + [
        ",".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys) for row in rows
    ]
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    params = load_params().inference
    predict = Predictor(load_model(files.MODEL_FILE), params, load_for(files.MODEL_FILE, files.CALIBRATION_FILE))
    val, test = load_split("val", files.PREPARED_DIR), load_split("test", files.PREPARED_DIR)

    found = predict(val.images)
    val_summary = split_summary(found, val.labels)
    files.write_json(files.VAL_METRICS_FILE, val_summary)
    per_class = per_class_rows("val", val.labels, found.probabilities.argmax(axis=1))
    files.write_bytes(files.VAL_ANSWERS_FILE, answers.split_csv(val.labels, found).encode())

    found = predict(test.images)
    assert found.unsure_score is not None and found.unsure is not None
    uncalibrated = before_calibration(found.probabilities, predict)
    right = found.probabilities.argmax(axis=1) == test.labels
    rows, per_image = not_garment_report(predict, found.unsure_score, not_garment_sets())
    summary = {
        **split_summary(found, test.labels),
        **unsure_summary(found, test.labels),
        "photo_sure": photo_garments_sure(predict, test),
        "worst_auroc": min(row["auroc"] for row in rows),
        "worst_unsure": min(row["unsure"] for row in rows),
    }
    files.write_json(files.TEST_METRICS_FILE, summary)
    per_class += per_class_rows("test", test.labels, found.probabilities.argmax(axis=1))
    files.write_bytes(files.PER_CLASS_PLOT, csv_rows(per_class))
    files.write_bytes(files.TEST_ANSWERS_FILE, answers.split_csv(test.labels, found).encode())
    files.save_npy(files.PREDICTIONS_FILE, found.probabilities.astype(np.float32))
    files.save_npy(files.UNCALIBRATED_PREDICTIONS_FILE, uncalibrated.astype(np.float32))
    files.save_npy(files.UNSURE_SCORES_FILE, found.unsure_score.astype(np.float32))
    files.write_bytes(
        files.CALIBRATION_PLOT, csv_rows(calibration_rows(found.probabilities, uncalibrated, test.labels))
    )
    files.write_bytes(files.RELIABILITY_PLOT, csv_rows(metrics.reliability(found.probabilities, test.labels)))
    files.write_bytes(files.RISK_COVERAGE_PLOT, csv_rows(metrics.risk_coverage(found.unsure_score, right)))
    files.write_bytes(files.NOT_GARMENTS_PLOT, csv_rows(rows))
    files.write_bytes(files.NOT_GARMENTS_ANSWERS_FILE, answers.not_garments_csv(per_image).encode())

    own = own_test_answers(lambda images: predict(images).probabilities)
    files.write_json(files.OWN_TEST_METRICS_FILE, own_test_report(*own) if own else {"images": 0})
    print(
        f"evaluate: validation accuracy {val_summary['accuracy']:.4f}; test accuracy "
        f"{summary['accuracy']:.4f}, ECE {summary['ece']:.4f}, {summary['coverage']:.1%} answered sure "
        f"({summary['sure_accuracy']:.4f} right); not garments: AUROC {summary['worst_auroc']:.3f} and "
        f"{summary['worst_unsure']:.0%} answered unsure in the worst set"
    )
