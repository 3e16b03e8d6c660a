"""The user's own labelled images (data/extra): where they are, which class each is, and the checks they must pass
before prepare adds them to the training split. Plain functions of paths and arrays; the photo conversion itself
is `fmnist predict`'s, which the prepare stage applies.

Layout: an image's class is the name of the folder it is in, so data/extra/<class>/x.jpg and
data/extra/<set>/<class>/x.jpg both work (a `dvc add`ed or `dvc import`ed folder of class folders). A class
folder is named after a class, any case, with anything that is not a letter or digit written as a hyphen:
`t-shirt-top` (or `T-shirt top`) for "T-shirt/top", `ankle-boot`, `sneaker`. Hidden files and DVC's `.dvc` files
are skipped; any other file must be an image.
"""

import difflib
import os
import re
from pathlib import Path

import numpy as np

from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.process import PipelineError

MIN_TRAINING_LONG_SIDE_PX = 24  # the longer side an own image's garment needs to train on, background trimmed
OWN_TEST_SPLIT = "own_test"  # the prepared split of held-out own images, written only when there are some

# Leakage: an own image this close to a test image is that test image again, and training on it would inflate the
# test metrics. Distance: root mean square difference in grey levels (0..255) to the nearest of the 10,000 test
# images, after blurring both by a Gaussian of LEAK_BLUR_PX (it forgives JPEG's block noise and resampling's
# sub-pixel shifts), for each of three views of the file: as `fmnist predict` converts it, and simply resized to
# 28x28 in grey, and that negated (the conversion negates an enlarged light-on-black copy, and trimming a copy's
# background moves its garment by a pixel). LEAK_RMS is above the distance that re-encoding a test image (down to
# JPEG quality 30) or enlarging it (2x or more) leaves, and below that of nearly every other garment, photographed
# or not: the few training images below it show the same garment as their test image (docs/results.md has the
# figures). A copy on a larger canvas is not caught: its trimmed edges differ from the original as much as another
# garment's do.
LEAK_RMS = 5.0
LEAK_BLUR_PX = 1.0


class OwnDataError(PipelineError):
    """An own image or folder that prepare cannot use; the message names the file and the fix."""


def slug(name: str) -> str:
    """A class or folder name as compared: lower case, every run of other characters than a-z0-9 one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


CLASS_SLUGS = tuple(slug(name) for name in CLASS_NAMES)  # t-shirt-top, trouser, ..., ankle-boot; index = label


def class_of_folder(folder: Path) -> int:
    """The label a class folder's name stands for; OwnDataError, with the closest class names, for any other."""
    name = slug(folder.name)
    if name in CLASS_SLUGS:
        return CLASS_SLUGS.index(name)
    close = difflib.get_close_matches(name, CLASS_SLUGS, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise OwnDataError(
        f"{folder}: unknown class folder {folder.name!r}; {hint}rename it to one of {', '.join(CLASS_SLUGS)}"
    )


def skipped(name: str) -> bool:
    """Whether a file or folder under data/extra is bookkeeping (.gitignore, .dvc files, .DS_Store), not data."""
    return name.startswith(".") or name.endswith(".dvc")


def find_images(root: Path) -> list[tuple[Path, int]]:
    """(file, label) for every own image file under `root`, sorted by path; none if `root` does not exist.

    OwnDataError for a file outside a class folder, a folder named after no class, or a folder with nothing in it.
    """
    found: list[tuple[Path, int]] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not skipped(d)]  # os.walk descends into what is left
        here, data_files = Path(folder), sorted(n for n in names if not skipped(n))
        if here == root and data_files:
            raise OwnDataError(
                f"{here / data_files[0]}: not in a class folder; move it into {root}/<class>/, one of "
                f"{', '.join(CLASS_SLUGS)}"
            )
        if here != root and not data_files and not subfolders:
            raise OwnDataError(f"{here}: a folder with no images; add images of its class or remove the folder")
        if here != root and data_files:
            label = class_of_folder(here)
            found += [(here / name, label) for name in data_files]
    return sorted(found)


def garment_size_problem(size: tuple[int, int]) -> str | None:
    """Why a garment of (width, height) px, background trimmed, is too small to train on; None if it is not.

    The conversion scales the longer side to 28 px: a smaller garment would be enlarged into a blur that no
    Fashion-MNIST image has, since the dataset's own garments fill nearly all of the 28 px after the same trimming.
    """
    if max(size) >= MIN_TRAINING_LONG_SIDE_PX:
        return None
    return (
        f"too small: the garment is only {size[0]}x{size[1]} pixels once the background is trimmed, and needs "
        f"{MIN_TRAINING_LONG_SIDE_PX} on its longer side; use a larger photo"
    )


def blurred(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) images as float32, blurred by a Gaussian of LEAK_BLUR_PX (zero beyond the edges)."""
    side = images.shape[-1]
    offsets = np.arange(side)[:, None] - np.arange(side)[None, :]
    kernel = np.exp(-0.5 * (offsets / LEAK_BLUR_PX) ** 2)
    kernel /= np.exp(-0.5 * (np.arange(-side, side + 1) / LEAK_BLUR_PX) ** 2).sum()  # weights sum to 1 inside
    # Separable: blur the columns, then the rows, as two (28, 28) matrix products per image.
    return (kernel @ images.astype(np.float32) @ kernel.T).astype(np.float32)


def nearest_test_images(views: np.ndarray, test_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of (N, 28, 28) `views`: the index of the nearest of `test_images` (M, 28, 28) and the blurred RMS
    distance to it in grey levels; (N,) int64 and (N,) float32."""
    reference = blurred(test_images).reshape(len(test_images), -1)
    reference_norms = (reference**2).sum(axis=1)
    indices, distances = [], []
    for start in range(0, len(views), 256):  # a (256, M) block of squared distances at a time: 10 MB for M=10,000
        query = blurred(views[start : start + 256]).reshape(-1, reference.shape[1])
        squared = (query**2).sum(axis=1)[:, None] + reference_norms[None, :] - 2 * query @ reference.T
        nearest = squared.argmin(axis=1)
        indices.append(nearest)
        distances.append(np.sqrt(np.maximum(squared[np.arange(len(query)), nearest], 0) / reference.shape[1]))
    if not indices:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(indices).astype(np.int64), np.concatenate(distances).astype(np.float32)


def check_no_test_copies(
    paths: list[Path], views: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray
) -> None:
    """OwnDataError naming the first own image that is a copy of a test image. `views` (N, V, 28, 28): V views of
    each of the N files (see LEAK_RMS); `test_images` (M, 28, 28) uint8."""
    if not paths:
        return
    count, per_file = views.shape[:2]
    indices, distances = nearest_test_images(views.reshape(-1, *views.shape[2:]), test_images)
    indices, distances = indices.reshape(count, per_file), distances.reshape(count, per_file)
    for path, file_indices, file_distances in zip(paths, indices, distances, strict=True):
        closest = int(file_distances.argmin())
        if file_distances[closest] < LEAK_RMS:
            index = int(file_indices[closest])
            raise OwnDataError(
                f"{path}: a copy of Fashion-MNIST test image {index} ({CLASS_NAMES[test_labels[index]]}; "
                f"{file_distances[closest]:.1f} grey levels apart, copies are below {LEAK_RMS}); training on it "
                "would inflate the test metrics: remove it"
            )


def held_out(labels: np.ndarray, fraction: float, min_images: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool: the own images held out for the own test split: `fraction` of each class (rounded down, drawn
    with `rng`) among the classes with at least `min_images` images."""
    chosen = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= min_images:
            count = int(round(fraction * len(members), 9))  # rounded to 9 places first: 0.29 * 100 is 28.99...
            chosen[rng.permutation(members)[:count]] = True
    return chosen


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """{every class name: images of it}, for plots/own_images.csv."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {name: int(n) for name, n in zip(CLASS_NAMES, counts, strict=True)}
