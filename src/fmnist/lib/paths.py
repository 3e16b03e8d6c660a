"""Every file the pipeline reads or writes, relative to the repository root (where DVC runs each stage).

dvc.yaml names the same paths; tests/test_dvc_yaml.py checks that the two agree.
"""

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
PRESETS_DIR = Path("presets")  # partial params laid over params.yaml (fmnist.tools.presets)
DVC_LOCK_FILE = Path("dvc.lock")  # what DVC recorded of the last run of each stage

# Local copies of the original release that fetch (`fetch.source: auto`) looks for before Kaggle, in this order.
DATA_DIR_ENV = "FMNIST_DATA_DIR"  # a directory holding the four IDX files (.gz or not)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's package dataset-fashion-mnist

RAW_DIR = Path("data/raw")  # fetch: the four original IDX files, uncompressed and verified
PREPARED_DIR = Path("data/prepared")  # prepare: <split>_images.npy / <split>_labels.npy
MODEL_FILE = Path("models/model.keras")  # train
TRAIN_LOG_DIR = Path("metrics/train")  # train: dvclive's metrics.json and plots/metrics/*.tsv
TRAIN_METRICS_FILE = TRAIN_LOG_DIR / "metrics.json"  # train: the last epoch's metrics and the run's environment
TRAIN_PLOTS_DIR = TRAIN_LOG_DIR / "plots"  # train: one TSV per metric, one row per epoch
PREDICTIONS_FILE = Path("data/predictions/test_probabilities.npy")  # evaluate: (10000, 10) float32
TEST_METRICS_FILE = Path("metrics/test.json")  # evaluate
PER_CLASS_METRICS_FILE = Path("metrics/per_class.json")  # evaluate
CONFUSION_FILE = Path("plots/confusion.csv")  # evaluate: one row per test image, for DVC's confusion template
EXPORT_DIR = Path("models/export")  # export: saved_model/, model.tflite, model_int8.tflite
EXPORT_METRICS_FILE = Path("metrics/export.json")  # export
RANDOM_PREDICTIONS_PLOT = Path("plots/random_predictions.png")  # plot_errors
MISCLASSIFIED_PLOT = Path("plots/misclassified.png")  # plot_errors
CONFUSED_PAIRS_PLOT = Path("plots/confused_pairs.png")  # plot_errors
SEEDS_FILE = Path("metrics/seeds.json")  # `fmnist seeds`: test accuracy of the current params over several seeds


def split_files(split: str, root: Path = PREPARED_DIR) -> tuple[Path, Path]:
    """The (images, labels) .npy paths of one prepared split."""
    return root / f"{split}_images.npy", root / f"{split}_labels.npy"
