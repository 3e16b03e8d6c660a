"""Which model answers a command's images, and how: a model file or a registered version or stage (GTO's tags),
the `inference` params it predicts with (its own commit's, or this directory's), its calibration (whether it can
answer unsure), the one way to load it, and the shape of an answer. Shared by `fmnist predict`, `fmnist serve` and
the tools that measure them.
"""

import argparse
import dataclasses
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fmnist.apps import registry
from fmnist.lib import files, process
from fmnist.lib.answers import Answers
from fmnist.lib.calibration import Calibration, CalibrationError, load_for
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.params import TTA, InferenceParams, load_params
from fmnist.lib.process import PipelineError

if TYPE_CHECKING:  # fmnist.nn.inference imports TensorFlow: only load_predictor imports it, when it runs
    from fmnist.nn.inference import Predictor

TTA_CHOICES: tuple[TTA, ...] = typing.get_args(TTA)
BATCH_SIZE_WITHOUT_PARAMS = 512  # with --tta and no params.yaml: bounded memory for large directories
UNCALIBRATED = "it cannot say unsure, so every image gets a garment label"  # in every warning of a missing one


@dataclass(frozen=True)
class Prediction:
    """One input's answer: its name, the 28x28 image the model saw, the (10,) class probabilities and, where the
    model is calibrated, whether it is unsure (all three unsure fields None where it is not)."""

    source: str
    image: np.ndarray  # (28, 28) uint8
    probabilities: np.ndarray  # (10,) float32, summing to 1; temperature-scaled where calibrated
    unsure: bool | None  # the unsure score is above the threshold: the best class is only a guess
    unsure_score: float | None
    unsure_threshold: float | None

    def ranked(self) -> list[tuple[str, float]]:
        """(class name, probability), most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")
        return [(CLASS_NAMES[i], float(self.probabilities[i])) for i in order]

    def summary(self) -> dict[str, Any]:
        """{class, probability, unsure, unsure_score, unsure_threshold, probabilities: {every class: p}}: the JSON
        of `--format json` and `fmnist serve`. `class` is the most probable class, a best guess where unsure."""
        best, probability = self.ranked()[0]
        return {
            "class": best,
            "probability": probability,
            "unsure": self.unsure,
            "unsure_score": self.unsure_score,
            "unsure_threshold": self.unsure_threshold,
            "probabilities": {name: float(q) for name, q in zip(CLASS_NAMES, self.probabilities, strict=True)},
        }


def predictions_from(
    sources: list[str], images: np.ndarray, answers: Answers, calibration: Calibration | None
) -> list[Prediction]:
    """One Prediction per source, from its (28, 28) uint8 image in `images` (N, 28, 28) and its row of `answers`
    (a Predictor's, with `calibration`)."""
    found = []
    for i, (source, image) in enumerate(zip(sources, images, strict=True)):
        if answers.unsure is None or answers.unsure_score is None or calibration is None:
            verdict: tuple[bool | None, float | None, float | None] = (None, None, None)
        else:
            verdict = (bool(answers.unsure[i]), float(answers.unsure_score[i]), calibration.threshold)
        found.append(Prediction(source, image, answers.probabilities[i], *verdict))
    return found


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model and how it predicts: a file, or a registered version or stage; shared with `fmnist serve`."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, default=files.MODEL_FILE, help="a .keras file (default: %(default)s)")
    which.add_argument(
        "--model-version", metavar="VERSION", help=f"the registered {registry.ARTIFACT} version, e.g. v1.0.0"
    )
    which.add_argument(
        "--model-stage", metavar="STAGE", help=f"the {registry.ARTIFACT} version assigned to STAGE, e.g. prod"
    )
    parser.add_argument(
        "--model-repo",
        default=".",
        metavar="REPO",
        help="the git repository (path or URL) whose registry to read (default: this one)",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        help="test-time augmentation (default: inference.tta of the model's params.yaml; flip: with the mirror image)",
    )


@dataclass(frozen=True)
class ChosenModel:
    """The model that answers, where it came from, how it predicts, and its calibration (None: it cannot answer
    unsure, for the reason in `uncalibrated`)."""

    path: Path
    commit: str | None  # the registry's commit for a registered model; None for a file
    inference: InferenceParams
    calibration: Calibration | None
    # Why there is no calibration: the warning that load_predictor prints once the model has loaded (so that a
    # missing or damaged model is still one error line). None where calibrated, or once the warning was given.
    uncalibrated: str | None


def chosen_model(args: argparse.Namespace) -> ChosenModel:
    """The model the arguments name (downloaded first if it is a registered one), its inference params and its
    calibration, or why it has none."""
    if not (args.model_version or args.model_stage):
        return model_file(args.model, args.tta)
    found = registry.registered_model(args.model_repo, version=args.model_version, stage=args.model_stage)
    if args.tta:
        inference = InferenceParams(tta=args.tta, batch_size=BATCH_SIZE_WITHOUT_PARAMS)
    else:
        inference = registry.inference_params(found)
    if not found.calibrated:
        why = f"{found.named} (commit {found.commit[:12]}) was registered before calibration existed: {UNCALIBRATED}"
        fix = f"use a version registered since (`gto show {registry.ARTIFACT}` lists them)"
        return ChosenModel(found.path, found.commit, inference, None, f"{why}; {fix}")
    return ChosenModel(found.path, found.commit, inference, *usable_calibration(found.path, inference.tta))


def model_file(path: Path, tta: TTA | None) -> ChosenModel:
    """The model file `path` with this directory's inference params (`tta` over them, from --tta) and the
    calibration beside it, or why it has none."""
    inference = workspace_inference(tta)
    return ChosenModel(path, None, inference, *usable_calibration(path, inference.tta))


def usable_calibration(model: Path, tta: TTA) -> tuple[Calibration | None, str | None]:
    """(the calibration beside `model`, None) if it was fitted for that model file and the views of `tta`; else
    (None, a one-line warning saying why and how to get one: the model still answers, never unsure)."""
    if not model.is_file():
        return None, None  # loading the model stops with one line saying it is missing
    try:
        found = load_for(model)
    except CalibrationError as exc:
        problem, _, fix = str(exc).rpartition("; ")
        return None, f"{problem}: {UNCALIBRATED}; {fix}"
    if found.tta != tta:
        where = model.parent / files.CALIBRATION_FILE.name
        why = f"{where} fitted unsure for the views of --tta {found.tta}, not {tta}: {UNCALIBRATED}"
        return None, f"{why}; pass --tta {found.tta} for unsure answers"
    return found, None


def without_calibration(path: Path, inference: InferenceParams, commit: str | None = None) -> ChosenModel:
    """The model file `path` predicting with `inference` and no calibration, by design and without a warning: for
    what reads only each image's most probable class, which temperature scaling never changes."""
    return ChosenModel(path, commit, inference, None, None)


def workspace_inference(tta: TTA | None) -> InferenceParams:
    """The `inference` section of this directory's params.yaml, with `tta` (from --tta) over it if given."""
    if files.PARAMS_FILE.is_file():
        params = load_params().inference
        return params if tta is None else dataclasses.replace(params, tta=tta)
    if tta is None:
        raise PipelineError(
            f"no {files.PARAMS_FILE} here to say how the model predicts (its inference section); run from the "
            "repository root, or pass --tta flip (as the pipeline does) or --tta none"
        )
    return InferenceParams(tta=tta, batch_size=BATCH_SIZE_WITHOUT_PARAMS)


def load_predictor(choice: ChosenModel, threads: int | None = None) -> "Predictor":
    """The chosen model's Predictor: TensorFlow first (its start-up notices filtered; on at most `threads` threads
    if given), then the model, then its calibration, or the one warning line saying why it has none."""
    process.load_tensorflow()
    import tensorflow as tf

    from fmnist.nn.inference import Predictor
    from fmnist.nn.model import load_model

    if threads is not None:  # before TensorFlow's first operation, which sizes its thread pools (a thread per core)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    model = load_model(choice.path)
    if choice.uncalibrated:
        print(f"warning: {choice.uncalibrated}", file=sys.stderr, flush=True)
    return Predictor(model, choice.inference, choice.calibration)
