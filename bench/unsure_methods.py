"""Which unsure score: the candidates, measured on validation and the not-garment sets' choose parts only.

    python -m bench.unsure_methods [--out unsure-methods.md]

Run from the repository root after `dvc repro calibrate` (it needs models/model.keras, its calibration,
data/prepared and data/not_garments). Every candidate answers unsure for the same share of validation images,
`unsure.coverage` (params.yaml), and is measured by:
- how well it tells each choose set from the validation garments (AUROC; 1 = every image of the set scores above
  every garment);
- the accuracy of the sure answers on validation, against the accuracy of all of them;
- the share of validation garments made into photos and converted back (as `python -m bench.photos` makes them) that
  stay sure.
The rule (docs/unsure.md): of the candidates that keep at least 85% of those photos sure and make the sure answers
at least 1.5 points more accurate, the one whose worst choose set has the highest AUROC. The test split and the
report parts are never read.

Candidates: the calibrated maximum probability (Hendrycks & Gimpel 2017), the energy (Liu et al. 2020), the
Mahalanobis distance of the penultimate layer's features (Lee et al. 2018) and of the activation statistics
(fmnist.nn.inference), and the pipeline's score, the larger of energy and statistics distance in units of their
validation tails (fmnist.lib.calibration).
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from bench import cli
from fmnist.apps.model_choice import load_predictor, without_calibration
from fmnist.lib import calibration as fitting
from fmnist.lib import files, metrics, photo
from fmnist.lib.files import NUM_CLASSES, load_split
from fmnist.lib.params import load_params

PHOTOS = 2000  # validation images made into photos: the first ones
MIN_PHOTOS_SURE = 0.85  # the rule's floors (docs/unsure.md)
MIN_ACCURACY_GAIN = 0.015
PENULTIMATE = "hidden"  # the dense layer before the classifier, in both architectures (fmnist.nn.model)


@dataclasses.dataclass(frozen=True)
class Measured:
    """One candidate's figures."""

    name: str
    auroc: dict[str, float]  # choose set -> AUROC against the validation garments
    sure_accuracy: float
    photos_sure: float

    def passes(self, accuracy: float) -> bool:
        """Whether it clears the rule's floors."""
        return self.photos_sure >= MIN_PHOTOS_SURE and self.sure_accuracy - accuracy >= MIN_ACCURACY_GAIN


def choose_sets() -> dict[str, np.ndarray]:
    """{set: images (M, 28, 28, 1)} of data/not_garments/choose (refused photos are left out: no score to rank)."""
    root = files.NOT_GARMENTS_DIR / "choose"
    return {path.stem: files.load_npy(path) for path in sorted(root.glob("*.npy"))}


def measured(
    name: str, score: Callable[[str], np.ndarray], val_right: np.ndarray, sets: list[str], coverage: float
) -> Measured:
    """A candidate's figures from `score(part)`, its (N,) scores on "val", "photos" or a choose set."""
    val = score("val")
    threshold = fitting.coverage_threshold(val, coverage)
    sure = val <= threshold
    return Measured(
        name,
        {s: metrics.auroc(val, score(s)) for s in sets},
        float(val_right[sure].mean()),
        float(np.mean(score("photos") <= threshold)),
    )


def table(found: list[Measured], accuracy: float, sets: list[str]) -> str:
    """The candidates as a Markdown table, the rule's choice marked."""
    passing = [m for m in found if m.passes(accuracy)]
    chosen = max(passing, key=lambda m: min(m.auroc.values())).name if passing else None
    header = ["score", *sets, "worst", "sure accuracy", "photos sure", "chosen"]
    rows = [
        [
            m.name,
            *(f"{m.auroc[s]:.3f}" for s in sets),
            f"{min(m.auroc.values()):.3f}",
            f"{m.sure_accuracy:.4f} ({100 * (m.sure_accuracy - accuracy):+.1f})",
            f"{m.photos_sure:.3f}",
            "yes" if m.name == chosen else "",
        ]
        for m in found
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def run() -> str:
    """Measure every candidate; the Markdown table and a line on what it measured."""
    params = load_params()
    # Uncalibrated: every candidate scores the model's raw components; the calibration is one candidate's part.
    predict = load_predictor(without_calibration(files.MODEL_FILE, params.inference))  # TensorFlow first
    import keras

    from fmnist.nn import inference

    model, calibration = predict.model, fitting.load_for(files.MODEL_FILE)

    val, train = load_split("val"), load_split("train")
    converted = [photo.decode(photo.varied_photo(image[..., 0], i)) for i, image in enumerate(val.images[:PHOTOS])]
    images = {"val": val.images, "photos": np.stack(converted)[..., None], **choose_sets()}
    parts = {part: predict.components(found) for part, found in images.items()}
    penultimate = keras.Model(model.inputs, model.get_layer(PENULTIMATE).output)

    def features(found: np.ndarray) -> np.ndarray:  # (N, units), averaged over the inference views
        views = inference.VIEWS[params.inference.tta]
        total = sum(v.weight for v in views)
        return sum(v.weight / total * penultimate.predict(inference.render(found, v), verbose=0) for v in views)

    means, whitening = fitting.fit_class_gaussians(features(train.images), train.labels, NUM_CLASSES)
    hidden = {part: features(found) for part, found in images.items()}
    product = {part: inference.answers_graph(found, calibration) for part, found in parts.items()}
    scores: dict[str, Callable[[str], np.ndarray]] = {
        "maximum probability": lambda p: -np.asarray(product[p]["probabilities"]).max(axis=1),
        "energy": lambda p: np.asarray(inference.energy(parts[p]["logits"])),
        "penultimate distance": lambda p: np.asarray(inference.nearest_class_distance(hidden[p], means, whitening)),
        "statistics distance": lambda p: np.asarray(
            inference.nearest_class_distance(parts[p]["statistics"], calibration.class_means, calibration.whitening)
        ),
        "energy + statistics (the pipeline's)": lambda p: np.asarray(product[p]["unsure_score"]),
    }
    val_right = parts["val"]["probabilities"].argmax(axis=1) == val.labels
    sets = [part for part in images if part not in ("val", "photos")]
    found = [measured(name, score, val_right, sets, params.unsure.coverage) for name, score in scores.items()]
    accuracy = float(val_right.mean())
    return (
        table(found, accuracy, sets)
        + f"\n\nValidation accuracy {accuracy:.4f}; each score answers {params.unsure.coverage:.0%} of the "
        f"validation images sure; photos: the first {PHOTOS} validation images. AUROC against the validation garments."
    )


def main(argv: list[str]) -> int:
    """Measure every candidate, print the table (and write it to --out)."""
    args = cli.parser("bench.unsure_methods", __doc__).parse_args(argv)
    cli.publish(run(), args.out)
    return 0


if __name__ == "__main__":
    cli.run(main)
