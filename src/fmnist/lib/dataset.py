"""What Fashion-MNIST is to the stages: its class names, its image shape, and the prepared splits they share."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.lib import files

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
class Split:
    """Images (N, 28, 28, 1) uint8 in 0..255 and labels (N,) uint8 in 0..9."""

    images: np.ndarray
    labels: np.ndarray


def save_split(split: Split, name: str, root: Path = files.PREPARED_DIR) -> None:
    """Write one split as two .npy files (atomically, each)."""
    images_path, labels_path = files.split_files(name, root)
    files.save_npy(images_path, split.images)
    files.save_npy(labels_path, split.labels)


def load_split(name: str, root: Path = files.PREPARED_DIR) -> Split:
    """Read one prepared split ('train', 'val' or 'test')."""
    images_path, labels_path = files.split_files(name, root)
    return Split(files.load_npy(images_path), files.load_npy(labels_path))
