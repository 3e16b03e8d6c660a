"""What the calibrate stage fits for one model on the validation split, its file, and the fitting: pure NumPy/SciPy.

Two things turn the model's answers honest (docs/unsure.md):
- a temperature T: the served probabilities p (N, 10), TTA included, become softmax(log p / T), which keeps each
  image's ranking of classes (accuracy is unchanged) and makes the confidence match the accuracy on validation
  (Guo et al. 2017, arXiv 1706.04599: one scalar fitted by negative log-likelihood);
- an unsure score, from two signs that an image is not a garment the model knows: its energy, -logsumexp of the
  logits (Liu et al. 2020, arXiv 2010.03759; high where no class fits), and the Mahalanobis distance of its
  activation statistics (each channel's mean and spread over space, at every resolution of the network) to the
  nearest class, with one covariance shared by the classes (Lee et al. 2018, arXiv 1807.03888; far for noise, flat
  images and textures no garment has). Each is counted in units of its own validation tail: 0 at the median, 1
  at ENERGY_TAIL or DISTANCE_TAIL. The larger of the two is the score, and images above the threshold, the
  validation quantile at `unsure.coverage`, are answered unsure.

The scores themselves are computed in the model's graph (fmnist.nn.inference), where they are served and exported.
"""

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from fmnist.lib import files
from fmnist.lib.process import PipelineError

# Where each part of the score reads 1 on validation. The energy is the main part (it also finds the garments the
# model hesitates over, which makes the sure answers more accurate): its unit is the 95th percentile. The distance
# only adds what lies far from every garment (noise, flat images): its unit is the 99th percentile, so it takes few
# of the validation garments' unsure answers. Chosen on validation and the not-garment choose parts (docs/unsure.md).
ENERGY_TAIL = 0.95
DISTANCE_TAIL = 0.99
RIDGE = 1e-6  # added to the covariance's diagonal (times its mean variance) so that it inverts where channels are dead


class CalibrationError(PipelineError):
    """A calibration file that cannot be used: missing fields, unreadable, or fitted for another model."""


@dataclass(frozen=True)
class Calibration:
    """How one model's probabilities are calibrated and when it answers unsure (fitted by the calibrate stage)."""

    model_md5: str  # the model file it was fitted for: with another model it means nothing
    tta: str  # the `inference.tta` it was fitted with: other views give other scores
    temperature: float  # probabilities p -> softmax(log p / T); T > 1 softens, T < 1 sharpens
    energy_centre: float  # validation median of the energy
    energy_tail: float  # its validation ENERGY_TAIL quantile
    class_means: np.ndarray  # (10, D) float32: the activation statistics' mean per class, on the training split
    whitening: np.ndarray  # (D, D) float32: L with L @ L.T the inverse of their covariance around the class means
    distance_centre: float  # validation median of the Mahalanobis distance to the nearest class
    distance_tail: float  # its validation DISTANCE_TAIL quantile
    threshold: float  # an unsure score above this: unsure
    coverage: float  # the share of validation images answered sure (unsure.coverage)

    def save(self, path: Path) -> None:
        """Write the calibration as one .npz (plain arrays, no pickled objects)."""
        arrays = {field.name: np.asarray(getattr(self, field.name)) for field in fields(self)}
        with files.atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(out, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        """Read a calibration written by `save`; a CalibrationError naming the file and the fix."""
        fix = "`dvc repro calibrate` fits it again"
        try:
            with np.load(path, allow_pickle=False) as stored:
                missing = [field.name for field in fields(cls) if field.name not in stored.files]
                values = {field.name: stored[field.name] for field in fields(cls) if field.name not in missing}
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{path} cannot be read ({exc}); {fix}") from None
        if missing:
            raise CalibrationError(f"{path} lacks {', '.join(missing)}; {fix}")
        arrays = {"class_means", "whitening"}
        return cls(**{name: value if name in arrays else value.item() for name, value in values.items()})


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes, as DVC records them."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def load_for(model: Path, path: Path | None = None) -> Calibration:
    """The calibration at `path` (default: beside the model file `model`, CALIBRATION_FILE's name in its directory),
    checked to be the one fitted for `model`; a CalibrationError saying what is missing or wrong and how to fit it."""
    path = path or Path(model).parent / files.CALIBRATION_FILE.name
    if Path(model).resolve() == files.MODEL_FILE.resolve():
        fix = "`dvc repro calibrate` fits one"
    else:  # a copied model: its calibration travels with it
        fix = f"copy the {files.CALIBRATION_FILE.name} that `dvc repro calibrate` fitted for it beside it"
    if not path.is_file():
        raise CalibrationError(f"{model} has no calibration beside it ({path}); {fix}")
    found = Calibration.load(path)
    if found.model_md5 != file_md5(model):
        raise CalibrationError(f"{path} was fitted for another model than {model}; {fix}")
    return found


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) probabilities -> softmax(log p / T), row by row, in float64."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `labels` under temperature_scaled(p, T)."""
    from scipy.optimize import minimize_scalar  # here: SciPy's optimisers take a second to import

    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        scaled = temperature_scaled(probabilities, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(scaled[rows, labels], 1e-12, 1.0))))

    # One smooth minimum in log T (the NLL is convex in 1/T for fixed logits): a bounded scalar search finds it.
    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def fit_class_gaussians(statistics: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(class means (C, D), whitening L (D, D)), float32, of (N, D) features with (N,) labels.

    L is the Cholesky factor of the inverse shared covariance, so the squared Mahalanobis distance of x to class c is
    |(x - mean_c) @ L|^2: one (D, D) product per image instead of one per image and class.
    """
    features = statistics.astype(np.float64)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(classes)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    covariance += RIDGE * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    return means.astype(np.float32), np.linalg.cholesky(np.linalg.inv(covariance)).astype(np.float32)


def centre_and_tail(values: np.ndarray, tail_quantile: float) -> tuple[float, float]:
    """(median, `tail_quantile` quantile) of one part of the score on validation: its units in the combined score."""
    centre, tail = np.quantile(values, [0.5, tail_quantile])
    if not tail > centre:
        raise CalibrationError(
            "the unsure score does not vary over the validation images (its median equals its tail); "
            "check that the model is trained (`dvc repro train`)"
        )
    return float(centre), float(tail)


def coverage_threshold(scores: np.ndarray, coverage: float) -> float:
    """The lowest score at or below which at least a `coverage` share of `scores` lies (validation: those answered
    sure)."""
    return float(np.quantile(scores, coverage, method="higher"))
