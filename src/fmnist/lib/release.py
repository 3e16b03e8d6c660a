"""The original Fashion-MNIST release: its four IDX files, how to recognise them, and how to read them."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.lib.dataset import IMAGE_SHAPE, NUM_CLASSES, Split
from fmnist.lib.errors import PipelineError
from fmnist.lib.idx import parse_idx, read_maybe_gzip


@dataclass(frozen=True)
class ReleaseFile:
    """One file of the original release, identified by the SHA-256 and size of its decompressed bytes."""

    name: str
    sha256: str
    size: int


RELEASE_FILES = (
    ReleaseFile(
        "train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016
    ),
    ReleaseFile("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    ReleaseFile(
        "t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016
    ),
    ReleaseFile("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
)


RAW_NAMES = {  # split -> (images file, labels file) in data/raw
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_raw_split(raw_dir: Path, split: str) -> Split:
    """Decode one split's IDX pair and check that images and labels belong together."""
    images_name, labels_name = RAW_NAMES[split]
    for name in (images_name, labels_name):
        if not (raw_dir / name).is_file():
            raise PipelineError(f"{raw_dir / name} is missing; run `dvc repro fetch` first")
    images = parse_idx(read_maybe_gzip(raw_dir / images_name), images_name)
    labels = parse_idx(read_maybe_gzip(raw_dir / labels_name), labels_name)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[:2]:
        raise PipelineError(f"{images_name} holds images of shape {images.shape[1:]}, expected 28x28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise PipelineError(f"{labels_name} has {labels.shape} labels for {len(images)} images in {images_name}")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise PipelineError(f"{labels_name} has label {labels.max()}, expected 0..{NUM_CLASSES - 1}")
    return Split(images[..., np.newaxis], labels)  # add the channel axis: (N, 28, 28, 1)
