"""What Fashion-MNIST is: its release files, its class names, and the prepared splits the stages share."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.lib import atomic, paths

# Index = label. Names from the dataset's README (zalandoresearch/fashion-mnist).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28, 1)  # height, width, channels (channels-last, as Keras expects)


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


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28, 1) uint8 in 0..255 and labels (N,) uint8 in 0..9."""

    images: np.ndarray
    labels: np.ndarray


def save_split(split: Split, name: str, root: Path = paths.PREPARED_DIR) -> None:
    """Write one split as two .npy files (atomically, each)."""
    images_path, labels_path = paths.split_files(name, root)
    atomic.save_npy(images_path, split.images)
    atomic.save_npy(labels_path, split.labels)


def load_split(name: str, root: Path = paths.PREPARED_DIR) -> Split:
    """Read one prepared split ('train', 'val' or 'test')."""
    images_path, labels_path = paths.split_files(name, root)
    return Split(atomic.load_npy(images_path), atomic.load_npy(labels_path))
