"""`fmnist predict`: classify photos (or Fashion-MNIST-like images) with the trained model.

    fmnist predict PATH [PATH ...] [--model models/model.keras | --model-stage prod | --model-version v1.0.0]
                   [--model-repo REPO] [--tta none|flip|flip_shift] [--top 3] [--format table|json|csv]
                   [--save-inputs DIR]

PATH is an image file, a directory (walked recursively, image files only, sorted) or `-` for one image on
standard input. Each image goes through fmnist.lib.photo (what the dataset's own conversion did), then the whole
set is predicted in batches by one loaded model, as `evaluate` predicts (fmnist.nn.inference, with the
`inference` section of params.yaml: this directory's, or the registered model's commit's). With the calibration
fitted for the model (models/calibration.npz beside it), an image that does not look like a garment the model
knows is answered unsure, with the most probable class as a best guess; without one, a warning line says that the
model cannot answer unsure. Unsure is an answer (exit status 0). A file that cannot be used gets one line on
stderr, the others are still predicted, and the exit status is 1 if any failed.
"""

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fmnist.apps.model_choice import Prediction, add_model_arguments, chosen_model, load_predictor, predictions_from
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.photo import UnusableImage, decode
from fmnist.lib.process import PipelineError

if TYPE_CHECKING:  # it imports TensorFlow, which loads only once the arguments are known to be sound
    from fmnist.nn.inference import Predictor

IMAGE_SUFFIXES = frozenset(Image.registered_extensions())  # .png, .jpg, .webp, .bmp, .gif, .tif, ... (lower case)
STDIN = "-"


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


def predict_sources(predict: "Predictor", sources: list[str]) -> tuple[list[Prediction], list[str]]:
    """Read, convert and predict every source; (predictions, one error line per failed source).

    `predict` maps uint8 images (N, 28, 28, 1) to their Answers, with its `calibration` (or None).
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
    stacked = np.stack(images)  # (N, 28, 28) uint8
    return predictions_from(names, stacked, predict(stacked[..., None]), predict.calibration), errors


def as_table(predictions: list[Prediction], top: int) -> str:
    """A readable table: file, predicted class and its probability (for an unsure image: "unsure", its best guess
    and that guess's probability, the probability column left empty), the next `top` classes."""
    rows = [("file", "class", "probability", f"next {top}" if top else "")]
    for p in predictions:
        (best, probability), *rest = p.ranked()
        if p.unsure:  # no class is the answer: the guess goes in words, the probability column stays empty
            answer, shown = f"unsure (best guess: {best} {probability:.3f})", ""
        else:
            answer, shown = best, f"{probability:.3f}"
        rows.append((p.source, answer, shown, ", ".join(f"{n} {q:.3f}" for n, q in rest[:top])))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows)


def as_json_lines(predictions: list[Prediction]) -> str:
    """One JSON object per image (Prediction.summary: the unsure fields null for an uncalibrated model)."""
    return "\n".join(json.dumps({"file": p.source, **p.summary()}) for p in predictions)


def as_csv(predictions: list[Prediction]) -> str:
    """A header, then one row per image: file, class (a best guess where unsure), probability, unsure (1 or 0),
    unsure_score, unsure_threshold (all three empty for an uncalibrated model), and each class's probability."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "class", "probability", "unsure", "unsure_score", "unsure_threshold", *CLASS_NAMES])
    for p in predictions:
        best, probability = p.ranked()[0]
        unsure = [p.unsure, p.unsure_score, p.unsure_threshold]
        cells = ["" if v is None else str(int(v)) if isinstance(v, bool) else f"{v:.6f}" for v in unsure]
        writer.writerow([p.source, best, f"{probability:.6f}", *cells, *(f"{q:.6f}" for q in p.probabilities)])
    return out.getvalue().rstrip("\n")


def save_inputs(predictions: list[Prediction], directory: Path) -> None:
    """Write the 28x28 image each input became, numbered in output order: 0001-<name>.png, ..."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, p in enumerate(predictions, start=1):
        stem = "stdin" if p.source == STDIN else Path(p.source).stem
        Image.fromarray(p.image, mode="L").save(directory / f"{number:04d}-{stem}.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of `fmnist predict`."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories, or - for stdin")
    add_model_arguments(parser)
    parser.add_argument("--top", type=int, default=3, help="runner-up classes in the table (default: %(default)s)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--save-inputs", type=Path, metavar="DIR", help="write the 28x28 image each input became")


def run(args: argparse.Namespace) -> int:
    """Predict and print; the exit status: 0 if every input was answered (a class or unsure), else 1."""
    if not 0 <= args.top <= len(CLASS_NAMES) - 1:
        raise PipelineError(f"--top must be between 0 and {len(CLASS_NAMES) - 1}, got {args.top}")
    found, errors = predict_sources(load_predictor(chosen_model(args)), args.paths)
    for line in errors:
        print(line, file=sys.stderr)
    if found:
        if args.format == "json":
            print(as_json_lines(found))
        elif args.format == "csv":
            print(as_csv(found))
        else:
            print(as_table(found, args.top))
    if args.save_inputs and found:
        save_inputs(found, args.save_inputs)
    return 1 if errors else 0
