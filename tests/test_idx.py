"""IDX decoding and checksums, on synthetic images and on deliberately broken bytes (the real files: test_fetch.py)."""

import gzip

import numpy as np
import pytest

from fmnist.lib.idx import IdxFormatError, encode_idx, parse_idx, read_maybe_gzip, sha256_hex


def test_encode_then_parse_round_trips(garments):
    images = garments["train-images-idx3-ubyte"][:5]
    data = encode_idx(images)
    assert data[:4] == b"\x00\x00\x08\x03" and len(data) == 16 + 5 * 28 * 28
    np.testing.assert_array_equal(parse_idx(data), images)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x07", "type 0x0d"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated inside its header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x08", "truncated or corrupt"),  # one byte short
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x07\x08", "truncated or corrupt"),  # one byte too many
        (b"PK\x03\x04", "bad magic"),  # a zip, not IDX
    ],
)
def test_malformed_bytes_are_refused_with_a_reason(data, message):
    with pytest.raises(IdxFormatError, match=message):
        parse_idx(data, "labels")


def test_gzip_and_plain_files_read_the_same(tmp_path):
    payload = encode_idx(np.arange(10, dtype=np.uint8))
    (tmp_path / "plain").write_bytes(payload)
    (tmp_path / "zipped").write_bytes(gzip.compress(payload))
    assert read_maybe_gzip(tmp_path / "plain") == read_maybe_gzip(tmp_path / "zipped") == payload


def test_damaged_gzip_is_a_clear_error(tmp_path):
    damaged = gzip.compress(encode_idx(np.arange(1000, dtype=np.uint8)))[:-20]
    (tmp_path / "damaged.gz").write_bytes(damaged)
    with pytest.raises(IdxFormatError, match="damaged gzip"):
        read_maybe_gzip(tmp_path / "damaged.gz")


def test_sha256_of_known_bytes():
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
