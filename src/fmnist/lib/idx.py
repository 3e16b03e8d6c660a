"""The IDX file format of (Fashion-)MNIST: parse, encode and checksum, pure functions on bytes.

Layout (big-endian): two zero bytes, a type byte (0x08 = uint8), the number of dimensions, one uint32 per
dimension, then the data in C order. Images: magic 0x00000803, dims (N, 28, 28); labels: 0x00000801, dims (N,).
"""

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from fmnist.lib.errors import PipelineError

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
