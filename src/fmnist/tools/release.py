"""Promotion, and the release workflow's steps (.github/workflows/release.yml), runnable and testable anywhere.

    fmnist release promote --version V [--stage prod] [--fail-on worse]   assign the stage unless V is worse
    fmnist release check-assignment TAG [--fail-on worse]   the same check for a stage assignment already tagged
    fmnist release parse-tag TAG                             name=, version=, stage=, event= (GITHUB_OUTPUT)
    fmnist release smoke MODEL [--count 100]                 predict test images with MODEL; fail below 0.85
    fmnist release card --version V [--stage S] [--commit SHA]   the model card (Markdown) on stdout

`promote` compares the version with the one the stage holds now, as `fmnist report` compares two commits (each
commit's per-image test answers, answers/test.csv or an older commit's plots/confusion.csv, and the seed spread
recorded there, metrics/seeds.json, read by fmnist.lib.sides), and assigns the stage (`gto assign`, a git tag:
push it with `git push --tags`) only if the verdict is not one that --fail-on names; otherwise it stops with exit
status 3 and one line. `check-assignment` judges a stage assignment tag that exists already (one pushed by hand)
against the assignment before it: the workflow deletes a refused tag, so the stage goes back to the version it
held.

`card` reads the figures of the checked-out commit (metrics/test.json, plots/per_class.csv, plots/export.csv).
"""

import argparse
import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.apps.registry import ARTIFACT
from fmnist.lib import answers, files, runs, sides
from fmnist.lib.files import CLASS_NAMES, IMAGE_SHAPE
from fmnist.lib.idx import RELEASE_FILES
from fmnist.lib.process import PipelineError, VerdictRefused
from fmnist.lib.stats import Verdict

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


def version_commit(version: str, repo: str = ".") -> str:
    """The commit that `fashion-cnn@VERSION` names."""
    from gto.api import show

    found = [v for v in show(repo, ARTIFACT) if v["version"] == version]
    if not found:
        raise PipelineError(f"{ARTIFACT} has no version {version}; `gto show {ARTIFACT}` lists them")
    return str(found[0]["commit_hexsha"])


def holders(stage: str, repo: str = ".", before_tag: str | None = None) -> list[str]:
    """The versions `stage` was assigned to, oldest first (the last holds it now), or those before the assignment
    tag `before_tag`. GTO names each assignment `fashion-cnn#STAGE#N`, N counting up."""
    tags = subprocess.run(
        ["git", "tag", "--list", f"{ARTIFACT}#{stage}#*"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    numbered = sorted((int(tag.rsplit("#", 1)[1]), tag) for tag in tags if tag.rsplit("#", 1)[1].isdigit())
    if before_tag is not None:
        numbered = [(n, tag) for n, tag in numbered if n < int(before_tag.rsplit("#", 1)[1])]
    return [parse_tag(tag, repo)["version"] for _, tag in numbered]


def gate(version: str, earlier: list[str], stage: str, fail_on: list[str], repo: str = ".") -> str:
    """Why `version` may take `stage` after the holders `earlier` (oldest first); VerdictRefused if it may not.

    A version that held the stage before may take it back (a rollback: it was accepted once); any other is
    judged against the one holding it.
    """
    if not earlier:
        return "the first version in it"
    current = earlier[-1]
    if version == current:
        return "it holds the stage already"
    if version in earlier:
        return f"a rollback: it held {stage} before {current}"
    verdict = judged(version, current, repo)
    if sides.option_word(verdict.word) in fail_on:
        raise VerdictRefused(
            f"{ARTIFACT} {version} is {verdict.word} than {current}, which holds {stage} ({verdict.reason}); "
            f"not assigning {stage}: `fmnist report` between the two commits says more"
        )
    return f"{verdict.word} against {current} ({verdict.reason})"


def judged(candidate: str, current: str, repo: str = ".") -> Verdict:
    """The report's verdict on version `candidate` against version `current`, from what each commit recorded."""
    base = sides.read_side(f"{ARTIFACT} {current}", sides.Reader(version_commit(current, repo)))
    head = sides.read_side(f"{ARTIFACT} {candidate}", sides.Reader(version_commit(candidate, repo)))
    if base is None or head is None:
        missing = current if base is None else candidate
        raise PipelineError(
            f"{ARTIFACT} {missing}'s commit has no {answers.SPLIT_FILES['test']} (nor the older "
            f"{answers.LEGACY_FILES['test']}): it cannot be compared"
        )
    try:
        return sides.accuracy_verdict(base, head)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None


def promote(version: str, stage: str, fail_on: list[str], repo: str = ".") -> str:
    """Assign `stage` to `version` unless the gate refuses it; what was done."""
    from gto.api import assign

    version_commit(version, repo)  # a clear line for an unknown version, before GTO's own message
    earlier = holders(stage, repo)
    why = gate(version, earlier, stage, fail_on, repo)
    assign(repo, ARTIFACT, stage, version=version, force=version in earlier)
    return f"promote: {ARTIFACT} {version} -> {stage}: {why}; `git push --tags` publishes it"


def check_assignment(tag: str, fail_on: list[str], repo: str = ".") -> str:
    """Judge the stage assignment `tag` against the assignments before it; what was found."""
    found = parse_tag(tag, repo)
    if found["event"] != "assignment":
        raise PipelineError(f"{tag} registers a version; only stage assignments (NAME#STAGE#N) are checked")
    why = gate(found["version"], holders(found["stage"], repo, before_tag=tag), found["stage"], fail_on, repo)
    return f"check-assignment: {tag}: {found['version']}: {why}"


def smoke_accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the model file on a few images (N, 28, 28, 1), as `fmnist predict` here would predict them."""
    from fmnist.apps.model_choice import load_predictor, without_calibration, workspace_inference

    # Uncalibrated: the accuracy reads only each image's most probable class.
    predict = load_predictor(without_calibration(model_path, workspace_inference(tta=None)))
    return float(np.mean(predict(images).probabilities.argmax(axis=1) == labels))


def calibration_lines(test: dict[str, Any]) -> list[str]:
    """The card's lines on calibration and unsure answers, from metrics/test.json; none for metrics from before the
    calibrate stage."""
    if "ece" not in test:
        return []
    lines = [
        "",
        f"Calibrated: expected calibration error {test['ece']:.4f}. {test['coverage']:.1%} of the test images are "
        f"answered sure, {test['sure_accuracy']:.2%} of those right; {test['photo_sure']:.1%} of photo-like test "
        "garments stay sure.",
    ]
    if "worst_auroc" in test:
        lines += [
            "",
            f"Images that are not garments (digits, letters, noise, flat images, and photos of each): in the worst "
            f"set, {test['worst_unsure']:.1%} answered unsure, and the unsure score tells them from the test garments "
            f"with an AUROC of {test['worst_auroc']:.3f}.",
        ]
    return lines


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as {column: text}, [] where the file is missing."""
    if not path.is_file():
        return []
    with open(path, newline="") as table:
        return list(csv.DictReader(table))


def model_card(version: str, stage: str, commit: str, root: Path = Path(".")) -> str:
    """The model card: contract, results and provenance of one registered version (its files under `root`)."""
    test = runs.split_figures(json.loads((root / files.TEST_METRICS_FILE).read_text()), "test")
    per_class = [row for row in csv_rows(root / files.PER_CLASS_PLOT) if row["split"] == "test"]
    exports = [row for row in csv_rows(root / files.EXPORT_PLOT) if row["written"] == "True"]
    lines = [
        f"# {ARTIFACT} {version}" + (f" ({stage})" if stage else ""),
        "",
        "A Keras CNN that classifies 28x28 grey images of clothing into the ten Fashion-MNIST classes.",
        "",
        "## Input and output",
        "",
        f"- `model.keras`: input uint8 images of shape (N, {', '.join(map(str, IMAGE_SHAPE))}), 0-255, garment light "
        "on black; output logits (N, 10). Load with `keras.models.load_model(path, safe_mode=True)`.",
        "- `export/saved_model`: signature `serve`, input `images` uint8 (N, 28, 28, 1), outputs `probabilities` "
        "(N, 10) float32, calibrated, `unsure_score` (N,) float32 and `unsure` (N,) bool: the image is not a garment "
        "the model knows, or one it hesitates over.",
        "- `export/*.tflite`: the same signature for LiteRT.",
        f"- Classes, by output index: {', '.join(f'{i} {name}' for i, name in enumerate(CLASS_NAMES))}.",
        "",
        "## Results on the 10,000 test images",
        "",
        f"Accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}, loss {test['loss']:.4f}.",
        *calibration_lines(test),
        "",
        "| class | precision | recall | F1 |",
        "|---|---|---|---|",
        *(f"| {row['class']} | {row['precision']} | {row['recall']} | {row['f1']} |" for row in per_class),
    ]
    if exports:
        lines += [
            "",
            "| file | size (kB) | test images answered as `model.keras` answers them (class and unsure) |",
            "|---|---|---|",
        ]
        lines += [f"| {row['file']} | {int(row['size_kb']):,} | {float(row['agreement']):.2%} |" for row in exports]
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
    """`fmnist release promote | check-assignment | parse-tag | smoke | card`."""
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    promote_parser = steps.add_parser("promote", help="assign a stage to a version, unless it is worse than the holder")
    promote_parser.add_argument("--version", required=True, help="the registered version, e.g. v1.2.0")
    promote_parser.add_argument("--stage", default="prod", help="the stage (default: prod)")
    check = steps.add_parser("check-assignment", help="judge a stage assignment tag against the one before it")
    check.add_argument("tag", help="e.g. fashion-cnn#prod#3")
    for gated in (promote_parser, check):
        sides.add_fail_on(gated, "refuse with exit status 3 on this verdict (repeatable; default: worse)")
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
    if args.step == "promote":
        print(promote(args.version, args.stage, args.fail_on or ["worse"]))
    elif args.step == "check-assignment":
        print(check_assignment(args.tag, args.fail_on or ["worse"]))
    elif args.step == "parse-tag":
        print("\n".join(f"{key}={value}" for key, value in parse_tag(args.tag).items()))
    elif args.step == "card":
        print(model_card(args.version, args.stage, args.commit), end="")
    else:
        from fmnist.lib.files import load_split

        if args.count < 1:
            raise PipelineError(f"--count {args.count}: the smoke test needs at least one test image")
        test = load_split("test")
        accuracy = smoke_accuracy(args.model, test.images[: args.count], test.labels[: args.count])
        print(f"smoke: {args.model} classifies {accuracy:.2%} of {args.count} test images correctly")
        if accuracy < SMOKE_MIN_ACCURACY:
            raise PipelineError(f"{args.model} scored {accuracy:.2%}, below {SMOKE_MIN_ACCURACY:.0%}: not releasing it")
    return 0
