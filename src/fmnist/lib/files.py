"""The data set and the repository's files: what Fashion-MNIST is to the stages (its class names, its image shape,
the prepared splits they share), every file the pipeline reads or writes, relative to the repository root (where
DVC runs each stage), and how they are written: beside the target, then renamed, so a failed or interrupted stage
leaves the old file.

dvc.yaml names the same paths; tests/test_dvc_yaml.py checks that the two agree.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Index = label. Names from the dataset's README (zalandoresearch/fashion-mnist).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28, 1)  # height, width, channels (channels-last, as Keras expects)

PARAMS_FILE = Path("params.yaml")
PRESETS_DIR = Path("presets")  # partial params laid over params.yaml (fmnist.lib.presets)
DVC_LOCK_FILE = Path("dvc.lock")  # what DVC recorded of the last run of each stage

# Local copies of the original release that fetch (`fetch.source: auto`) looks for before Kaggle, in this order.
DATA_DIR_ENV = "FMNIST_DATA_DIR"  # a directory holding the four IDX files (.gz or not)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's package dataset-fashion-mnist

RAW_DIR = Path("data/raw")  # fetch: the four original IDX files, uncompressed and verified
EXTRA_DIR = Path("data/extra")  # prepare reads: the user's own labelled images, <class>/*.jpg|png (docs/own-data.md)
PREPARED_DIR = Path("data/prepared")  # prepare: <split>_images.npy / <split>_labels.npy
NOT_GARMENTS_DIR = Path("data/not_garments")  # not_garments: {choose,report}/<set>.npy, refused.json
DATA_METRICS_FILE = Path("metrics/data.json")  # prepare: how many own images went into each split ({} without)
OWN_IMAGES_PLOT = Path("plots/own_images.csv")  # prepare: the same per class
MODEL_FILE = Path("models/model.keras")  # train
CALIBRATION_FILE = MODEL_FILE.with_name("calibration.npz")  # calibrate: beside the model it was fitted for
TRAIN_LOG_DIR = Path("metrics/train")  # train: dvclive's metrics.json and plots/metrics/*.tsv
TRAIN_METRICS_FILE = TRAIN_LOG_DIR / "metrics.json"  # train: the last epoch's figures and the run's environment
TRAIN_PLOTS_DIR = TRAIN_LOG_DIR / "plots"  # train: one TSV per metric, one row per epoch
VAL_CURVE_FILE = TRAIN_PLOTS_DIR / "metrics/eval/accuracy.tsv"  # train: validation accuracy after each epoch
PREDICTIONS_FILE = Path("data/predictions/test_probabilities.npy")  # evaluate: (10000, 10) float32, calibrated
UNCALIBRATED_PREDICTIONS_FILE = PREDICTIONS_FILE.with_name("test_uncalibrated.npy")  # evaluate: the same, before
UNSURE_SCORES_FILE = PREDICTIONS_FILE.with_name("test_unsure_scores.npy")  # evaluate: (10000,) float32
VAL_METRICS_FILE = Path("metrics/val.json")  # evaluate: the validation split, what choices are made on
TEST_METRICS_FILE = Path("metrics/test.json")  # evaluate: the test split, calibration and unsure answers
OWN_TEST_METRICS_FILE = Path("metrics/own_test.json")  # evaluate: the held-out own images (none: images 0)
PER_CLASS_PLOT = Path("plots/per_class.csv")  # evaluate: precision, recall and F1 per class and split
CALIBRATION_PLOT = Path("plots/calibration.csv")  # evaluate: test ECE, loss and Brier before and after calibration
ANSWERS_DIR = Path("answers")  # evaluate: each image's answer (fmnist.lib.answers)
VAL_ANSWERS_FILE = ANSWERS_DIR / "val.csv"  # a row per validation image: what choices are made on
TEST_ANSWERS_FILE = ANSWERS_DIR / "test.csv"  # a row per test image
NOT_GARMENTS_ANSWERS_FILE = ANSWERS_DIR / "not_garments.csv"  # a row per image of the not-garment report parts
NOT_GARMENTS_PLOT = Path("plots/not_garments.csv")  # evaluate: each report set's AUROC, FPR at 95% TPR, share unsure
RELIABILITY_PLOT = Path("plots/reliability.csv")  # evaluate: test accuracy against confidence, 15 bins
RISK_COVERAGE_PLOT = Path("plots/risk_coverage.csv")  # evaluate: test error among the most sure answers
EXPORT_DIR = Path("models/export")  # export: saved_model/, model.tflite, model_float16.tflite
EXPORT_PLOT = Path("plots/export.csv")  # export: each file's size and how often it answers as the model
RANDOM_PREDICTIONS_PLOT = Path("plots/random_predictions.png")  # plot_errors
MISCLASSIFIED_PLOT = Path("plots/misclassified.png")  # plot_errors
CONFUSED_PAIRS_PLOT = Path("plots/confused_pairs.png")  # plot_errors
TRAINING_CURVES_PLOT = Path("plots/training_curves.png")  # plot_errors
UNSURE_PLOT = Path("plots/unsure.png")  # plot_errors
SEEDS_FILE = Path("metrics/seeds.json")  # `fmnist seeds`: test accuracy of the current params over several seeds


def split_files(split: str, root: Path = PREPARED_DIR) -> tuple[Path, Path]:
    """The (images, labels) .npy paths of one prepared split."""
    return root / f"{split}_images.npy", root / f"{split}_labels.npy"


# --- Writing whole files or nothing ---------------------------------------------------------------------------


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)  # two renames: the window without `target` is microseconds long
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(target: Path, data: bytes) -> None:
    """Atomically write `data` to `target`."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: Path, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON (stable diffs in git)."""
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_npy(target: Path, array: np.ndarray) -> None:
    """Atomically save one array in .npy format (no pickled objects)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def load_npy(path: Path) -> np.ndarray:
    """Load a .npy array written by this pipeline; object arrays are refused (allow_pickle=False)."""
    return np.load(path, allow_pickle=False)


# --- The prepared splits -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28, 1) uint8 in 0..255 and labels (N,) uint8 in 0..9."""

    images: np.ndarray
    labels: np.ndarray


def save_split(split: Split, name: str, root: Path = PREPARED_DIR) -> None:
    """Write one split as two .npy files (atomically, each)."""
    images_path, labels_path = split_files(name, root)
    save_npy(images_path, split.images)
    save_npy(labels_path, split.labels)


def load_split(name: str, root: Path = PREPARED_DIR) -> Split:
    """Read one prepared split ('train', 'val' or 'test')."""
    images_path, labels_path = split_files(name, root)
    return Split(load_npy(images_path), load_npy(labels_path))
