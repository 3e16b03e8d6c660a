"""Stage `not_garments`: images that are not garments, made by code, for measuring when the model should be unsure.

Nothing is downloaded: the digits are scikit-learn's bundled 8x8 handwritten digits, the letters Pillow's built-in
font, the rest NumPy's seeded generator. Each set comes twice: as 28x28 arrays shaped like the dataset's images
(light on black), and as a user's file would reach the model, each array made into a photo-like JPEG (dark on
white, enlarged, with margins: fmnist.lib.photo.varied_photo) and converted back by `fmnist predict`'s conversion
(fmnist.lib.photo.decode), which refuses some (a flat image is one colour). Each set is split, image by image,
into a part that methods and thresholds may be chosen with and a part that only reports.

Writes data/not_garments/{choose,report}/<set>.npy, (N, 28, 28, 1) uint8 as the prepared splits, and
data/not_garments/refused.json: how many photos of each set the conversion refused, per part.
"""

import json
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fmnist.lib import files, photo
from fmnist.lib.params import NotGarmentsParams, load_params

SIZE = 28
DIGIT_BOX = 20  # MNIST's layout: each digit scaled into a 20x20 box, centred on the 28x28 canvas
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LETTER_BOX = 24  # a rendered letter larger than this (either side) is scaled down into it
PARTS = ("choose", "report")


def digits() -> np.ndarray:
    """scikit-learn's 1,797 handwritten digits (8x8, values 0-16) as (1797, 28, 28) uint8, light on black."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn's wheel: no download

    small = load_digits().images * (255 / 16)  # (1797, 8, 8) float64 in 0..255
    out = np.zeros((len(small), SIZE, SIZE), np.uint8)
    start = (SIZE - DIGIT_BOX) // 2
    for i, image in enumerate(small.astype(np.uint8)):
        box = Image.fromarray(image).resize((DIGIT_BOX, DIGIT_BOX), Image.Resampling.BILINEAR)
        out[i, start : start + DIGIT_BOX, start : start + DIGIT_BOX] = np.asarray(box)
    return out


def letters(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` letters A-Z and a-z in turn, in Pillow's built-in font at 18-29 px and grey 160-255, centred on
    black: (count, 28, 28) uint8."""
    out = np.zeros((count, SIZE, SIZE), np.uint8)
    for i in range(count):
        font = ImageFont.load_default(size=int(rng.integers(18, 30)))
        canvas = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
        ImageDraw.Draw(canvas).text((SIZE, SIZE), LETTERS[i % len(LETTERS)], int(rng.integers(160, 256)), font, "mm")
        glyph = canvas.crop(canvas.getbbox())
        scale = min(1.0, LETTER_BOX / max(glyph.size))
        if scale < 1:
            size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
            glyph = glyph.resize(size, Image.Resampling.BOX)
        letter = Image.new("L", (SIZE, SIZE), 0)
        letter.paste(glyph, ((SIZE - glyph.width) // 2, (SIZE - glyph.height) // 2))
        out[i] = np.asarray(letter)
    return out


def uniform_noise(count: int, rng: np.random.Generator) -> np.ndarray:
    """Every pixel drawn uniformly from 0-255: (count, 28, 28) uint8."""
    return rng.integers(0, 256, (count, SIZE, SIZE), dtype=np.uint8)


def gaussian_noise(count: int, rng: np.random.Generator) -> np.ndarray:
    """Per image a mean grey (40-215) and a spread (10-80 levels), every pixel drawn from that Gaussian and clipped
    to 0-255: from a noisy grey patch to a speckle (count, 28, 28) uint8."""
    mean = rng.uniform(40, 215, (count, 1, 1))
    spread = rng.uniform(10, 80, (count, 1, 1))
    return np.clip(rng.normal(mean, spread, (count, SIZE, SIZE)), 0, 255).astype(np.uint8)


def flat() -> np.ndarray:
    """One image of every grey level, the blank black image (0) and the white one (255) among them: (256, 28, 28)."""
    return np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None], (256, SIZE, SIZE)).copy()


def as_photos(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (28, 28) image made into a photo-like JPEG and converted back as `fmnist predict` converts a file:
    (the converted images (M, 28, 28) uint8, which of the N inputs were refused (N,) bool)."""
    converted, refused = [], np.zeros(len(images), bool)
    for i, image in enumerate(images):
        try:
            converted.append(photo.decode(photo.varied_photo(image, i)))
        except photo.UnusableImage:  # a flat image is one colour once on its white margins: nothing to classify
            refused[i] = True
    return np.stack(converted) if converted else np.zeros((0, SIZE, SIZE), np.uint8), refused


def made_sets(params: NotGarmentsParams) -> dict[str, np.ndarray]:
    """{set name: (N, 28, 28) uint8}: digits, letters, uniform, gaussian, flat, each from its own seeded stream."""
    makers: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "digits": lambda rng: digits(),
        "letters": lambda rng: letters(params.images_per_set, rng),
        "uniform": lambda rng: uniform_noise(params.images_per_set, rng),
        "gaussian": lambda rng: gaussian_noise(params.images_per_set, rng),
        "flat": lambda rng: flat(),
    }
    # One generator per set, so that changing one set's size leaves the others' images as they were.
    streams = np.random.default_rng(params.seed).spawn(len(makers))
    return {name: make(rng) for (name, make), rng in zip(makers.items(), streams, strict=True)}


def choose_mask(count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(count,) bool: which images go to the choose part, round(fraction * count) of them, drawn by `rng`."""
    mask = np.zeros(count, bool)
    mask[rng.permutation(count)[: round(fraction * count)]] = True
    return mask


def main() -> None:
    params = load_params().not_garments
    split_rng = np.random.default_rng([params.seed, 1])  # the split's own stream, apart from the images'
    refused: dict[str, dict[str, int]] = {part: {} for part in PARTS}
    with files.atomic_dir(files.NOT_GARMENTS_DIR) as out:
        for name, images in made_sets(params).items():
            chosen = choose_mask(len(images), params.choose_fraction, split_rng)
            photos, refused_photos = as_photos(images)
            photo_chosen = chosen[~refused_photos]  # each photo goes where its array went
            for part, in_part in zip(PARTS, (chosen, ~chosen), strict=True):
                photo_in_part = photo_chosen if part == "choose" else ~photo_chosen
                files.save_npy(out / part / f"{name}.npy", images[in_part, ..., None])  # (N, 28, 28, 1)
                files.save_npy(out / part / f"{name}_photo.npy", photos[photo_in_part, ..., None])
                refused[part][f"{name}_photo"] = int(np.sum(refused_photos & in_part))
            print(f"not_garments: {name} {len(images)} images, {int(refused_photos.sum())} photos refused")
        (out / "refused.json").write_text(json.dumps(refused, indent=2, sort_keys=True) + "\n")
    print(f"not_garments -> {files.NOT_GARMENTS_DIR}")
