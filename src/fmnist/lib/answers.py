"""Each image's answer, as the evaluate stage writes them and as the report, the sweep and the release gate read them.

answers/val.csv and answers/test.csv hold one row per image of the split, in the split's order:
`actual,predicted,confidence,actual_probability,unsure_score,unsure` (class names; the calibrated probability of
the predicted class and of the true one; the unsure score and 1 where it is above the threshold). DVC draws their
confusion matrices from the first two columns (dvc.yaml). answers/not_garments.csv holds one row per image of
the not-garment sets' report parts: `set,unsure_score,unsure`, a photo that the conversion refused with an empty
score and unsure 1.

Commits from before answers/ existed kept only `actual,predicted` in plots/confusion.csv and
plots/val_confusion.csv: `read` falls back to those, without confidence or unsure.
"""

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.lib import files
from fmnist.lib.files import CLASS_NAMES

SPLIT_FILES = {"val": files.VAL_ANSWERS_FILE, "test": files.TEST_ANSWERS_FILE}
LEGACY_FILES = {"val": Path("plots/val_confusion.csv"), "test": Path("plots/confusion.csv")}  # actual,predicted
HEADER = ["actual", "predicted", "confidence", "actual_probability", "unsure_score", "unsure"]
NOT_GARMENTS_HEADER = ["set", "unsure_score", "unsure"]


@dataclass(frozen=True)
class Answers:
    """A batch's answers: probabilities, and the unsure score and verdict where the model is calibrated."""

    probabilities: np.ndarray  # (N, 10) float32, each row summing to 1; temperature-scaled where calibrated
    unsure_score: np.ndarray | None  # (N,) float32; None without a calibration
    unsure: np.ndarray | None  # (N,) bool: score above the threshold; None without a calibration


@dataclass(frozen=True)
class SplitAnswers:
    """The model's answer to every image of one split."""

    actual: np.ndarray  # (N,) int64 true class indices
    predicted: np.ndarray  # (N,) int64 predicted class indices
    confidence: np.ndarray | None  # (N,) float64 calibrated probability of the predicted class; None before answers/
    unsure: np.ndarray | None  # (N,) bool: answered unsure; None where the model could not say so
    actual_probability: np.ndarray | None = None  # (N,) float64 calibrated probability of the true class
    unsure_score: np.ndarray | None = None  # (N,) float64; None where the model could not say unsure

    @property
    def right(self) -> np.ndarray:
        """(N,) bool: which images the model classifies right."""
        return self.actual == self.predicted


def split_csv(labels: np.ndarray, found: Answers) -> str:
    """The rows of answers/<split>.csv for (N,) labels and the model's Answers to those N images."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    probabilities = found.probabilities
    for i, (label, guess) in enumerate(zip(labels, probabilities.argmax(axis=1), strict=True)):
        score = "" if found.unsure_score is None else f"{found.unsure_score[i]:.4f}"
        flag = "" if found.unsure is None else int(found.unsure[i])
        confidences = (f"{probabilities[i, guess]:.4f}", f"{probabilities[i, label]:.6f}")
        writer.writerow([CLASS_NAMES[label], CLASS_NAMES[guess], *confidences, score, flag])
    return out.getvalue()


def parse_split(text: str, name: Path) -> SplitAnswers:
    """The answers in `text` (answers/<split>.csv, or a legacy actual,predicted file); ValueError naming `name`."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0][:2] != ["actual", "predicted"]:
        raise ValueError(f"{name} does not start with the header actual,predicted")
    try:
        actual = np.array([CLASS_NAMES.index(row[0]) for row in rows[1:]], np.int64)
        predicted = np.array([CLASS_NAMES.index(row[1]) for row in rows[1:]], np.int64)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{name} has a row that does not start with two class names ({exc})") from None
    if rows[0] != HEADER:  # a legacy file: the classes only
        return SplitAnswers(actual, predicted, None, None)
    try:
        confidence, actual_probability = (np.array([float(row[k]) for row in rows[1:]]) for k in (2, 3))
        scores, flags = [row[4] for row in rows[1:]], [row[5] for row in rows[1:]]
        calibrated = all(flags)  # an uncalibrated model's answers leave both empty
        unsure_score = np.array([float(score) for score in scores]) if calibrated else None
        unsure = np.array([flag == "1" for flag in flags]) if calibrated else None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{name} has a row without its confidences or its unsure answer ({exc})") from None
    return SplitAnswers(actual, predicted, confidence, unsure, actual_probability, unsure_score)


def read(read_file: Callable[[Path], str | None], split: str) -> SplitAnswers | None:
    """A split's answers from `read_file` (a file's text at some revision, or None): answers/<split>.csv, else the
    legacy plot file; None if neither exists."""
    for path in (SPLIT_FILES[split], LEGACY_FILES[split]):
        text = read_file(path)
        if text is not None:
            return parse_split(text, path)
    return None


def not_garments_csv(scores: dict[str, tuple[np.ndarray, np.ndarray, int]]) -> str:
    """answers/not_garments.csv from {set: ((M,) scores, (M,) unsure flags, photos refused)}."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(NOT_GARMENTS_HEADER)
    for name, (score, unsure, refused) in scores.items():
        writer.writerows([name, f"{s:.4f}", int(u)] for s, u in zip(score, unsure, strict=True))
        writer.writerows([name, "", 1] for _ in range(refused))
    return out.getvalue()


def parse_not_garments(text: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{set: ((M,) scores, NaN where refused; (M,) unsure flags)} from answers/not_garments.csv."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != NOT_GARMENTS_HEADER:
        raise ValueError(f"{files.NOT_GARMENTS_ANSWERS_FILE} does not start with {','.join(NOT_GARMENTS_HEADER)}")
    found: dict[str, tuple[list[float], list[bool]]] = {}
    for name, score, unsure in rows[1:]:
        scores, flags = found.setdefault(name, ([], []))
        scores.append(float(score) if score else np.nan)
        flags.append(unsure == "1")
    return {name: (np.array(scores), np.array(flags)) for name, (scores, flags) in found.items()}
