"""How well and how fast `fmnist predict` works on photos: accuracy on photo-like JPEGs against the same images
as arrays, the time of one `fmnist predict one.jpg` from the shell, and images per second.

    python -m bench.photos [--model models/model.keras] [--count 1000] [--out predict-bench.md]

Run from the repository root; needs data/prepared (`dvc repro prepare`). The photos are the first COUNT test
images, negated to a white background, upscaled 4-8x, placed with white margins on a larger canvas and saved as
RGB JPEGs: what a product photo looks like, made from images whose labels are known.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import cli
from fmnist.apps.model_choice import load_predictor, model_file
from fmnist.lib import files
from fmnist.lib.files import CLASS_NAMES, load_split
from fmnist.lib.photo import varied_photo
from fmnist.lib.process import PipelineError


def write_photos(samples: np.ndarray, directory: Path) -> list[Path]:
    """One JPEG per (28, 28) sample, with varied sizes and margins; the paths in sample order (sorted names)."""
    directory.mkdir(parents=True, exist_ok=True)
    photos = []
    for i, sample in enumerate(samples):
        path = directory / f"{i:05d}.jpg"
        path.write_bytes(varied_photo(sample, i))
        photos.append(path)
    return photos


def cli_predictions(args: list[str]) -> tuple[list[int], float]:
    """Run `fmnist predict ARGS --format csv`; (class index per row, wall seconds)."""
    fmnist = Path(sys.executable).with_name("fmnist")
    start = time.perf_counter()
    result = subprocess.run([str(fmnist), "predict", *args, "--format", "csv"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise PipelineError(f"`fmnist predict {' '.join(args)}` failed: {last}")
    rows = result.stdout.strip().splitlines()[1:]
    return [CLASS_NAMES.index(row.split(",")[1]) for row in rows], seconds


def measure(model_path: Path, count: int) -> dict[str, float]:
    """Accuracy on arrays and on photos, and the speed figures; see the module docstring."""
    test = load_split("test")
    images, labels = test.images[:count, ..., 0], test.labels[:count]
    predict = load_predictor(model_file(model_path, tta=None))
    predict(test.images[:10])  # warm-up: the first call traces the graph
    start = time.perf_counter()
    all_probabilities = predict(test.images).probabilities
    arrays_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="fmnist-photos-") as scratch:
        photos = write_photos(images, Path(scratch))
        photo_classes, directory_seconds = cli_predictions([scratch, "--model", str(model_path)])
        one = [cli_predictions([str(photos[0]), "--model", str(model_path)])[1] for _ in range(3)]
    return {
        "array_accuracy": float(np.mean(all_probabilities[:count].argmax(axis=1) == labels)),
        "photo_accuracy": float(np.mean(np.array(photo_classes) == labels)),
        "one_jpeg_seconds": statistics.median(one),
        "directory_seconds": directory_seconds,
        "arrays_per_second": len(test.images) / arrays_seconds,
    }


def report(figures: dict[str, float], count: int, command: str) -> str:
    """The figures as a Markdown table."""
    return "\n".join(
        [
            "| measure | value |",
            "|---|---|",
            f"| accuracy on {count} test images as arrays | {figures['array_accuracy']:.4f} |",
            "| accuracy on the same images as photo-like JPEGs, through `fmnist predict` | "
            f"{figures['photo_accuracy']:.4f} |",
            "| `fmnist predict one.jpg` from the shell, start-up included (median of 3) | "
            f"{figures['one_jpeg_seconds']:.1f} s |",
            f"| `fmnist predict DIR` on {count} JPEGs, start-up included | {figures['directory_seconds']:.1f} s "
            f"({count / figures['directory_seconds']:.0f} images/s) |",
            "| 10,000 28x28 arrays, in process (with params.yaml's `inference`) | "
            f"{figures['arrays_per_second']:,.0f} images/s |",
            "",
            f"Measured by `{command}`.",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m bench.photos`."""
    parser.add_argument("--model", type=Path, default=files.MODEL_FILE, help="a .keras file (default: %(default)s)")
    parser.add_argument("--count", type=int, default=1000, help="test images made into photos (default: %(default)s)")


def main(argv: list[str]) -> int:
    """Measure, print the table (and write it to --out)."""
    parser = cli.parser("bench.photos", __doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    cli.publish(report(measure(args.model, args.count), args.count, cli.typed(parser, argv)), args.out)
    return 0


if __name__ == "__main__":
    cli.run(main)
