"""The release workflow's steps (.github/workflows/release.yml), runnable and testable on any machine.

    fmnist release parse-tag TAG                                 name=, version=, stage=, event= (GITHUB_OUTPUT)
    fmnist release smoke MODEL [--count 100]                     predict test images with MODEL; fail below 0.85
    fmnist release card --version V [--stage S] [--commit SHA]   the model card (Markdown) on stdout

`card` reads the metrics of the checked-out commit (metrics/test.json, per_class.json, export.json).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from fmnist.apps.registry import ARTIFACT
from fmnist.lib.dataset import CLASS_NAMES, IMAGE_SHAPE
from fmnist.lib.errors import PipelineError
from fmnist.lib.idx import RELEASE_FILES

SMOKE_MIN_ACCURACY = 0.85  # far below the model's ~0.94, far above a broken model's ~0.1


def parse_tag(tag: str, repo: str = ".") -> dict[str, str]:
    """What a GTO tag says: {name, version, stage, event} ("" where it says nothing), read by gto itself."""
    from gto.api import check_ref
    from gto.base import Assignment, Registration

    events = [e for e in check_ref(repo, tag) if isinstance(e, (Assignment, Registration))]
    if not events:
        raise PipelineError(f"{tag} is not a GTO tag of this repository (NAME@vX.Y.Z or NAME#STAGE#N)")
    event = events[0]
    return {
        "name": event.artifact,
        "version": event.version,
        "stage": getattr(event, "stage", ""),
        "event": "assignment" if isinstance(event, Assignment) else "registration",
    }


def smoke_accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the model file on a few images (N, 28, 28, 1), as `fmnist predict` here would predict them."""
    from fmnist.apps.predict import workspace_inference
    from fmnist.nn.inference import Predictor
    from fmnist.nn.model import load_model

    predict = Predictor(load_model(model_path), workspace_inference(tta=None))
    return float(np.mean(predict(images).argmax(axis=1) == labels))


def model_card(version: str, stage: str, commit: str, metrics_dir: Path = Path("metrics")) -> str:
    """The model card: contract, results and provenance of one registered version."""
    test = json.loads((metrics_dir / "test.json").read_text())["test"]
    per_class = json.loads((metrics_dir / "per_class.json").read_text())
    export_file = metrics_dir / "export.json"
    exports = json.loads(export_file.read_text())["export"] if export_file.is_file() else {}
    lines = [
        f"# {ARTIFACT} {version}" + (f" ({stage})" if stage else ""),
        "",
        "A Keras CNN that classifies 28x28 grey images of clothing into the ten Fashion-MNIST classes.",
        "",
        "## Input and output",
        "",
        f"- `model.keras`: input uint8 images of shape (N, {', '.join(map(str, IMAGE_SHAPE))}), 0-255, garment light "
        "on black; output logits (N, 10). Load with `keras.models.load_model(path, safe_mode=True)`.",
        "- `export/saved_model`: signature `serve`, input `images` uint8 (N, 28, 28, 1), output probabilities (N, 10).",
        "- `export/*.tflite`: the same signature for LiteRT.",
        f"- Classes, by output index: {', '.join(f'{i} {name}' for i, name in enumerate(CLASS_NAMES))}.",
        "",
        "## Results on the 10,000 test images",
        "",
        f"Accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}, loss {test['loss']:.4f}.",
        "",
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
        *(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} |" for name, m in per_class.items()),
    ]
    if exports:
        lines += [
            "",
            "| file | size (kB) | test accuracy | largest probability difference from Keras |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {m['size_kb']:,} | {m['test_accuracy']:.4f} | {m['max_abs_diff']:.2g} |"
            for name, m in exports.items()
            if m.get("written", True)
        ]
    lines += [
        "",
        "## Provenance",
        "",
        f"- Commit: `{commit}`.",
        "- Data: Fashion-MNIST (Zalando Research, MIT licence), the original release; SHA-256 of each "
        "decompressed file:",
        *(f"  - `{f.name}`: `{f.sha256}`" for f in RELEASE_FILES),
    ]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`fmnist release parse-tag | smoke | card`."""
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    steps.add_parser("parse-tag", help="what a GTO tag says, as name=value lines").add_argument("tag")
    smoke = steps.add_parser("smoke", help=f"classify test images with MODEL; fail below {SMOKE_MIN_ACCURACY:.0%}%")
    smoke.add_argument("model", type=Path)
    smoke.add_argument("--count", type=int, default=100, help="test images (default: %(default)s)")
    card = steps.add_parser("card", help="the model card of this commit's metrics, as Markdown")
    card.add_argument("--version", required=True)
    card.add_argument("--stage", default="")
    card.add_argument("--commit", default="unknown")


def run(args: argparse.Namespace) -> int:
    """Run one release step."""
    if args.step == "parse-tag":
        print("\n".join(f"{key}={value}" for key, value in parse_tag(args.tag).items()))
    elif args.step == "card":
        print(model_card(args.version, args.stage, args.commit), end="")
    else:
        from fmnist.lib.dataset import load_split

        if args.count < 1:
            raise PipelineError(f"--count {args.count}: the smoke test needs at least one test image")
        test = load_split("test")
        accuracy = smoke_accuracy(args.model, test.images[: args.count], test.labels[: args.count])
        print(f"smoke: {args.model} classifies {accuracy:.2%} of {args.count} test images correctly")
        if accuracy < SMOKE_MIN_ACCURACY:
            raise PipelineError(f"{args.model} scored {accuracy:.2%}, below {SMOKE_MIN_ACCURACY:.0%}: not releasing it")
    return 0
