"""`fmnist predict`: classify photos (or Fashion-MNIST-like images) with the trained model.

    fmnist predict PATH [PATH ...] [--model models/model.keras | --model-stage prod | --model-version v1.0.0]
                   [--tta none|flip|flip_shift] [--top 3] [--format table|json|csv] [--save-inputs DIR]

PATH is an image file, a directory (walked recursively, image files only, sorted) or `-` for one image on
standard input. Each image goes through fmnist.apps.photo (what the dataset's own conversion did), then the whole
set is predicted in batches by one loaded model, as `evaluate` predicts (fmnist.nn.inference, with the
`inference` section of params.yaml: this directory's, or the registered model's commit's). A file that cannot be
used gets one line on stderr, the others are still predicted, and the exit status is 1 if any failed.
"""

import argparse
import csv
import dataclasses
import io
import json
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmnist.apps import registry
from fmnist.apps.photo import UnusableImage, decode
from fmnist.lib import files, process
from fmnist.lib.dataset import CLASS_NAMES
from fmnist.lib.errors import PipelineError
from fmnist.lib.params import TTA, InferenceParams, load_params

TTA_CHOICES: tuple[TTA, ...] = typing.get_args(TTA)
BATCH_SIZE_WITHOUT_PARAMS = 512  # with --tta and no params.yaml: bounded memory for large directories
IMAGE_SUFFIXES = frozenset(Image.registered_extensions())  # .png, .jpg, .webp, .bmp, .gif, .tif, ... (lower case)
STDIN = "-"


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


def image_sources(arguments: list[str]) -> Iterator[tuple[str, str | None]]:
    """(source, problem) for every input the arguments name; problem is None for a usable-looking source."""
    for argument in arguments:
        path = Path(argument)
        if argument == STDIN or path.is_file():
            yield argument, None
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            yield from ((str(p), None) for p in found)
            if not found:
                yield argument, "a directory with no image files (PNG, JPEG, WebP, BMP, GIF, TIFF, ...)"
        else:
            yield argument, "no such file or directory"


def read_image(source: str) -> np.ndarray:
    """The (28, 28) uint8 network input for one file (or stdin); UnusableImage or OSError saying what is wrong."""
    return decode(sys.stdin.buffer.read() if source == STDIN else Path(source).read_bytes())


def predict_sources(
    predict: Callable[[np.ndarray], np.ndarray], sources: list[str]
) -> tuple[list[Prediction], list[str]]:
    """Read, convert and predict every source; (predictions, one error line per failed source).

    `predict` maps uint8 images (N, 28, 28, 1) to probabilities (N, 10): a fmnist.nn.inference.Predictor.
    """
    names, images, errors = [], [], []
    for source, problem in image_sources(sources):
        try:
            if problem:
                raise UnusableImage(problem)
            images.append(read_image(source))
            names.append(source)
        except (UnusableImage, OSError) as exc:
            reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
            errors.append(f"error: {'standard input' if source == STDIN else source}: {reason}")
    if not images:
        return [], errors
    probabilities = predict(np.stack(images)[..., None])
    return [Prediction(n, i, p) for n, i, p in zip(names, images, probabilities, strict=True)], errors


def as_table(predictions: list[Prediction], top: int) -> str:
    """A readable table: file, predicted class, its probability, the next `top` classes."""
    rows = [("file", "class", "probability", f"next {top}" if top else "")]
    for p in predictions:
        (best, probability), *rest = p.ranked()
        rows.append((p.source, best, f"{probability:.3f}", ", ".join(f"{n} {q:.3f}" for n, q in rest[:top])))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows)


def as_json_lines(predictions: list[Prediction]) -> str:
    """One JSON object per image, with every class's probability."""
    return "\n".join(json.dumps({"file": p.source, **p.summary()}) for p in predictions)


def as_csv(predictions: list[Prediction]) -> str:
    """A header, then one row per image: file, class, probability, and each class's probability."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "class", "probability", *CLASS_NAMES])
    for p in predictions:
        best, probability = p.ranked()[0]
        writer.writerow([p.source, best, f"{probability:.6f}", *(f"{q:.6f}" for q in p.probabilities)])
    return out.getvalue().rstrip("\n")


def save_inputs(predictions: list[Prediction], directory: Path) -> None:
    """Write the 28x28 image each input became, numbered in output order: 0001-<name>.png, ..."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, p in enumerate(predictions, start=1):
        stem = "stdin" if p.source == STDIN else Path(p.source).stem
        Image.fromarray(p.image, mode="L").save(directory / f"{number:04d}-{stem}.png")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of `fmnist predict`."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories, or - for stdin")
    add_model_arguments(parser)
    parser.add_argument("--top", type=int, default=3, help="runner-up classes in the table (default: %(default)s)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--save-inputs", type=Path, metavar="DIR", help="write the 28x28 image each input became")


def run(args: argparse.Namespace) -> int:
    """Predict and print; the exit status: 0 if every input was classified, else 1."""
    if not 0 <= args.top <= len(CLASS_NAMES) - 1:
        raise PipelineError(f"--top must be between 0 and {len(CLASS_NAMES) - 1}, got {args.top}")
    choice = chosen_model(args)
    process.load_tensorflow()
    from fmnist.nn.inference import Predictor  # TensorFlow loads only once the arguments are known to be sound
    from fmnist.nn.model import load_model

    predictions, errors = predict_sources(Predictor(load_model(choice.path), choice.inference), args.paths)
    for line in errors:
        print(line, file=sys.stderr)
    if predictions:
        if args.format == "json":
            print(as_json_lines(predictions))
        elif args.format == "csv":
            print(as_csv(predictions))
        else:
            print(as_table(predictions, args.top))
    if args.save_inputs and predictions:
        save_inputs(predictions, args.save_inputs)
    return 1 if errors else 0
