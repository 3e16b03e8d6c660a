"""What the served model answers for photos of things that are not garments, in none of the not_garments sets.

    python -m bench.other_photos [--out other-photos.md]

The photos are the sample images that scikit-image and scikit-learn ship in their wheels (a cat, a cup of coffee,
a page, a camera man, an astronaut, a temple, a flower, textures, microscope and telescope images; nothing is
downloaded). Each goes through `fmnist predict`'s path as a PNG file: the photo conversion, which refuses what it
cannot cut a garment out of, then the model and its calibration (models/model.keras and models/calibration.npz:
run `dvc repro calibrate` first). Prints one row per photo: refused (and why), unsure, or a sure garment.
"""

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from bench import cli
from fmnist.apps.model_choice import load_predictor, model_file
from fmnist.lib import files, photo
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.process import PipelineError

# scikit-image's bundled sample images (skimage.data), by the function that returns each: those that need no
# download (the others are fetched through pooch at first use, which an offline machine cannot).
SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "checkerboard",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "text",
)


def as_png(pixels: np.ndarray) -> bytes:
    """An image array (H, W) or (H, W, 3|4), any numeric type, as the bytes of a PNG file."""
    if pixels.dtype != np.uint8:  # float or bool images: stretched to 0-255
        low, high = float(pixels.min()), float(pixels.max())
        pixels = ((pixels - low) / ((high - low) or 1) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def sample_photos() -> Iterator[tuple[str, bytes]]:
    """(name, PNG bytes) of every sample image that scikit-image and scikit-learn ship."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    for name in SKIMAGE_PHOTOS:
        yield f"skimage {name}", as_png(getattr(skimage.data, name)())
    found = load_sample_images()
    for file_name, pixels in zip(found.filenames, found.images, strict=True):
        yield f"sklearn {Path(file_name).stem}", as_png(pixels)


def answers(photos: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(name, what the served model answers) for each photo."""
    choice = model_file(files.MODEL_FILE, tta=None)  # as `fmnist predict` chooses it
    if choice.calibration is None:  # the table is about unsure answers: without them it says nothing
        raise PipelineError(choice.uncalibrated or f"{files.MODEL_FILE} is missing; run `dvc repro calibrate`")
    predict = load_predictor(choice)
    found = []
    for name, data in photos:
        try:
            image = photo.decode(data)
        except photo.UnusableImage as exc:
            found.append((name, f"refused: {str(exc).split(';')[0]}"))
            continue
        answer = predict(image[None, ..., None])
        guess = f"{CLASS_NAMES[answer.probabilities[0].argmax()]} {answer.probabilities[0].max():.2f}"
        assert answer.unsure is not None
        found.append((name, f"unsure (best guess: {guess})" if answer.unsure[0] else f"sure: {guess}"))
    return found


def main(argv: list[str]) -> int:
    """Answer every photo, print the table (and write it to --out)."""
    args = cli.parser("bench.other_photos", __doc__).parse_args(argv)
    rows = answers(list(sample_photos()))
    counts = {kind: sum(answer.startswith(kind) for _, answer in rows) for kind in ("refused", "unsure", "sure")}
    summary = f"{len(rows)} photos: {counts['refused']} refused, {counts['unsure']} unsure, {counts['sure']} sure."
    text = "\n".join(
        ["| photo | answer |", "|---|---|", *(f"| {name} | {answer} |" for name, answer in rows), "", summary]
    )
    cli.publish(text, args.out)
    return 0


if __name__ == "__main__":
    cli.run(main)
