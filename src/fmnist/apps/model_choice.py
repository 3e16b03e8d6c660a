"""Which model answers a command's images, and how: a model file or a registered version or stage (GTO's tags),
the `inference` params it predicts with (its own commit's, or this directory's), and the shape of an answer.
Shared by `fmnist predict`, `fmnist serve` and the tools that measure them.
"""

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.apps import registry
from fmnist.lib import files
from fmnist.lib.dataset import CLASS_NAMES
from fmnist.lib.errors import PipelineError
from fmnist.lib.params import TTA, InferenceParams, load_params

TTA_CHOICES: tuple[TTA, ...] = typing.get_args(TTA)
BATCH_SIZE_WITHOUT_PARAMS = 512  # with --tta and no params.yaml: bounded memory for large directories


@dataclass(frozen=True)
class Prediction:
    """One input's answer: its name, the 28x28 image the model saw, the (10,) class probabilities."""

    source: str
    image: np.ndarray  # (28, 28) uint8
    probabilities: np.ndarray  # (10,) float32, summing to 1

    def ranked(self) -> list[tuple[str, float]]:
        """(class name, probability), most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")
        return [(CLASS_NAMES[i], float(self.probabilities[i])) for i in order]

    def summary(self) -> dict[str, Any]:
        """{class, probability, probabilities: {every class: p}}: the JSON of `--format json` and `fmnist serve`."""
        best, probability = self.ranked()[0]
        return {
            "class": best,
            "probability": probability,
            "probabilities": {name: float(q) for name, q in zip(CLASS_NAMES, self.probabilities, strict=True)},
        }


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
    """The model that answers, where it came from, and how it predicts."""

    path: Path
    commit: str | None  # the registry's commit for a registered model; None for a file
    inference: InferenceParams


def chosen_model(args: argparse.Namespace) -> ChosenModel:
    """The model the arguments name (downloaded first if it is a registered one) and its inference params."""
    if args.model_version or args.model_stage:
        found = registry.registered_model(args.model_repo, version=args.model_version, stage=args.model_stage)
        if args.tta:
            inference = InferenceParams(tta=args.tta, batch_size=BATCH_SIZE_WITHOUT_PARAMS)
        else:
            inference = registry.inference_params(found)
        return ChosenModel(found.path, found.commit, inference)
    return ChosenModel(args.model, None, workspace_inference(args.tta))


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
