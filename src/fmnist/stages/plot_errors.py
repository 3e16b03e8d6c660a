"""Stage `plot_errors`: pictures of the model for people: its test predictions, its mistakes, how it learned.

Writes plots/random_predictions.png (a seeded random sample), plots/misclassified.png (a seeded sample of the
errors), plots/confused_pairs.png (which true -> predicted mistakes are most common),
plots/training_curves.png (loss and accuracy after each epoch, from the train stage's dvclive logs) and
plots/unsure.png (what the confidence means: its calibration, the error among the sure answers, and how often
images that are not garments are answered unsure, from evaluate's outputs).
"""

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fmnist.lib import files, metrics, plots
from fmnist.lib.calibration import Calibration
from fmnist.lib.files import NUM_CLASSES, load_split
from fmnist.lib.params import load_params
from fmnist.lib.process import PipelineError

CONFUSED_PAIRS_SHOWN = 10


def misclassified_indices(true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indices of the images whose predicted label differs from the true one."""
    return np.flatnonzero(true != predicted)


def sample_indices(candidates: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Up to `count` of `candidates`, drawn without replacement by a generator seeded with `seed`, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))


def save_figure(fig: Figure, target: Path) -> None:
    """Save `fig` as PNG atomically, then free it."""
    with files.atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    fig.clear()


def logged_curves() -> dict[str, dict[str, list[float]]]:
    """{"train" | "validation": {"loss" | "accuracy": a value per epoch}} from dvclive's TSVs (step, value)."""
    logged = {"train": "train", "validation": "eval"}  # dvclive's name for the validation split
    return {
        name: {
            metric: np.loadtxt(
                files.TRAIN_PLOTS_DIR / f"metrics/{folder}/{metric}.tsv", skiprows=1, usecols=1, ndmin=1
            ).tolist()
            for metric in ("loss", "accuracy")
        }
        for name, folder in logged.items()
    }


def unsure_figure(test_labels: np.ndarray, probabilities: np.ndarray) -> Figure:
    """plots/unsure.png from evaluate's predictions, its unsure scores and its not-garment figures."""
    scores = files.load_npy(files.UNSURE_SCORES_FILE)  # (N,) float32
    threshold = Calibration.load(files.CALIBRATION_FILE).threshold
    before = files.load_npy(files.UNCALIBRATED_PREDICTIONS_FILE)
    reliability = {
        f"before calibration (ECE {metrics.ece(before, test_labels):.3f})": metrics.reliability(before, test_labels),
        f"served (ECE {metrics.ece(probabilities, test_labels):.3f})": metrics.reliability(probabilities, test_labels),
    }
    right = probabilities.argmax(axis=1) == test_labels
    with open(files.NOT_GARMENTS_PLOT, newline="") as table:
        sets = [(row["set"], float(row["unsure"])) for row in csv.DictReader(table)]
    return plots.unsure_figure(
        reliability, metrics.risk_coverage(scores, right), float(np.mean(scores <= threshold)), sets, "Saying unsure"
    )


def main() -> None:
    params = load_params().plot_errors
    test = load_split("test", files.PREPARED_DIR)
    if not files.PREDICTIONS_FILE.is_file():
        raise PipelineError(f"{files.PREDICTIONS_FILE} is missing; run `dvc repro evaluate` first")
    probabilities = files.load_npy(files.PREDICTIONS_FILE)  # (N, 10) float32
    predicted = probabilities.argmax(axis=1)

    shown = sample_indices(np.arange(len(test.labels)), params.n_random, params.seed)
    wrong = sample_indices(misclassified_indices(test.labels, predicted), params.n_misclassified, params.seed)
    matrix = metrics.confusion_matrix(test.labels, predicted, NUM_CLASSES)
    pairs = metrics.most_confused_pairs(matrix, CONFUSED_PAIRS_SHOWN)
    figures = {
        files.RANDOM_PREDICTIONS_PLOT: plots.prediction_grid(
            test.images[shown], test.labels[shown], probabilities[shown], f"{len(shown)} random test images"
        ),
        files.MISCLASSIFIED_PLOT: plots.prediction_grid(
            test.images[wrong],
            test.labels[wrong],
            probabilities[wrong],
            f"{len(wrong)} of {int(np.sum(test.labels != predicted))} misclassified test images",
        ),
        files.CONFUSED_PAIRS_PLOT: plots.confused_pairs_chart(
            pairs, matrix.sum(axis=1), f"The {len(pairs)} most common mistakes"
        ),
        files.TRAINING_CURVES_PLOT: plots.training_curves(logged_curves(), "Training, epoch by epoch"),
        files.UNSURE_PLOT: unsure_figure(test.labels, probabilities),
    }
    for target, fig in figures.items():
        save_figure(fig, target)
    print(f"plot_errors: {len(figures)} figures -> {files.RANDOM_PREDICTIONS_PLOT.parent}")
