"""`fmnist predict`: classify photos (or Fashion-MNIST-like images) with the trained model.

    fmnist predict PATH [PATH ...] [--model models/model.keras | --model-stage prod | --model-version v1.0.0]
                   [--top 3] [--format table|json|csv] [--save-inputs DIR]

PATH is an image file, a directory (walked recursively, image files only, sorted) or `-` for one image on
standard input. Each image goes through fmnist.apps.photo (what the dataset's own conversion did), then the whole set
is predicted in batches by one loaded model. A file that cannot be used gets one line on stderr, the others are
still predicted, and the exit status is 1 if any failed.
"""

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fmnist.apps.photo import NoGarmentError, to_fashion_mnist
from fmnist.apps.registry import ARTIFACT, registered_model
from fmnist.lib import paths
from fmnist.lib.dataset import CLASS_NAMES
from fmnist.lib.errors import PipelineError, run_stage

BATCH_SIZE = 512  # images per model call: one call for most inputs, bounded memory for large directories
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

    def summary(self) -> dict:
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
    """The (28, 28) uint8 network input for one file (or stdin); ValueError with a short reason if unusable."""
    return convert(sys.stdin.buffer.read() if source == STDIN else Path(source).read_bytes())


def convert(data: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) -> the (28, 28) uint8 network input; ValueError saying what is wrong."""
    if not data:
        raise ValueError("an empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so a truncated file fails here and not halfway through
            return to_fashion_mnist(image)
    except UnidentifiedImageError:
        raise ValueError("not an image that Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"too large to decode safely ({exc})") from None
    except NoGarmentError as exc:
        raise ValueError(str(exc)) from None
    except (OSError, SyntaxError) as exc:  # Pillow's truncated or malformed data
        raise ValueError(f"a damaged or truncated image ({exc})") from None


def predict_images(model, images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 10) float32 probabilities, each averaged with its mirror image's (as evaluate)."""
    from fmnist.lib.params import EvaluateParams
    from fmnist.stages.evaluate import predict_probabilities  # TensorFlow loads here, after the inputs are read

    return predict_probabilities(model, images[..., None], EvaluateParams(batch_size=BATCH_SIZE, flip_tta=True))


def predict_sources(model, sources: list[str]) -> tuple[list[Prediction], list[str]]:
    """Read, convert and predict every source; (predictions, one error line per failed source)."""
    names, images, errors = [], [], []
    for source, problem in image_sources(sources):
        try:
            if problem:
                raise ValueError(problem)
            images.append(read_image(source))
            names.append(source)
        except (ValueError, OSError) as exc:
            errors.append(f"error: {'standard input' if source == STDIN else source}: {exc}")
    if not images:
        return [], errors
    probabilities = predict_images(model, np.stack(images))
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
    """Which model: a file, or a registered version or stage (fmnist.apps.registry); shared with `fmnist serve`."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, default=paths.MODEL_FILE, help="a .keras file (default: %(default)s)")
    which.add_argument("--model-version", metavar="VERSION", help=f"the registered {ARTIFACT} version, e.g. v1.0.0")
    which.add_argument("--model-stage", metavar="STAGE", help=f"the {ARTIFACT} version assigned to STAGE, e.g. prod")
    parser.add_argument(
        "--model-repo",
        default=".",
        metavar="REPO",
        help="the git repository (path or URL) whose registry to read (default: this one)",
    )


def model_file(args: argparse.Namespace) -> Path:
    """The model the arguments name, downloaded first if it is a registered one."""
    if args.model_version or args.model_stage:
        return registered_model(args.model_repo, version=args.model_version, stage=args.model_stage)
    return args.model


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
    from fmnist.nn.modelio import load_model  # TensorFlow loads only once the arguments are known to be sound

    model = load_model(model_file(args))
    predictions, errors = predict_sources(model, args.paths)
    for line in errors:
        print(line, file=sys.stderr)
    if predictions:
        render = {
            "table": lambda: as_table(predictions, args.top),
            "json": lambda: as_json_lines(predictions),
            "csv": lambda: as_csv(predictions),
        }[args.format]
        print(render())
    if args.save_inputs and predictions:
        save_inputs(predictions, args.save_inputs)
    return 1 if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="fmnist predict", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    run_stage(main)
