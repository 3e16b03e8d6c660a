"""The original Fashion-MNIST release: the IDX format of its files (parse, encode, checksum), which four files it
has, and one split read from them.

Layout (big-endian): two zero bytes, a type byte (0x08 = uint8), the number of dimensions, one uint32 per
dimension, then the data in C order. Images: magic 0x00000803, dims (N, 28, 28); labels: 0x00000801, dims (N,).
"""

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.lib.files import IMAGE_SHAPE, NUM_CLASSES, Split
from fmnist.lib.process import PipelineError

UINT8_TYPE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(PipelineError):
    """The bytes are not a well-formed uint8 IDX file."""


def parse_idx(data: bytes, name: str = "IDX file") -> np.ndarray:
    """Decode uint8 IDX bytes into an array of the declared shape, checking magic, dims and size."""
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise IdxFormatError(f"{name} is not an IDX file (bad magic bytes); fetch the original Fashion-MNIST files")
    type_code, ndim = data[2], data[3]
    if type_code != UINT8_TYPE:
        raise IdxFormatError(f"{name} holds IDX type 0x{type_code:02x}, expected 0x08 (uint8)")
    if ndim == 0:
        raise IdxFormatError(f"{name} declares zero dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(f"{name} is truncated inside its header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise IdxFormatError(
            f"{name} has {len(data)} bytes but its header {dims} implies {expected}: "
            "the file is truncated or corrupt; fetch it again"
        )
    # frombuffer shares the (read-only) bytes; copy so callers get an ordinary writable array.
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (the inverse of parse_idx)."""
    if array.dtype != np.uint8 or array.ndim == 0:
        raise ValueError(f"encode_idx needs a uint8 array with at least one dimension, got {array.dtype}")
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, UINT8_TYPE, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def read_maybe_gzip(path: Path) -> bytes:
    """Read a file's bytes, decompressing when it starts with the gzip magic (whatever its name)."""
    data = Path(path).read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise IdxFormatError(f"{path} is a damaged gzip file ({exc}); fetch it again") from exc


def sha256_hex(data: bytes) -> str:
    """SHA-256 of `data` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


# --- The release's four files ------------------------------------------------------------------------------


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
