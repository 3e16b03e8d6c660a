"""prepare: decoding checks and the seeded, stratified splits (own images: tests/test_own_data.py)."""

import dataclasses

import numpy as np
import pytest

from fmnist.lib.files import Split, load_split, save_split
from fmnist.lib.idx import encode_idx, read_raw_split
from fmnist.lib.params import PrepareParams
from fmnist.lib.process import PipelineError
from fmnist.stages.prepare import split_train_val, stratified_sample

DEFAULTS = PrepareParams(val_fraction=0.1, seed=1, limit=None, own_test_fraction=0.2, own_test_min_images=10)


@pytest.fixture
def labels() -> np.ndarray:
    return np.repeat(np.arange(10, dtype=np.uint8), [100, 50, 80, 70, 60, 90, 40, 30, 20, 60])


def test_stratified_sample_keeps_class_shares(labels):
    picked = stratified_sample(labels, 300, np.random.default_rng(0))
    assert len(picked) == 300 and len(np.unique(picked)) == 300
    shares = np.bincount(labels[picked], minlength=10) / 300
    np.testing.assert_allclose(shares, np.bincount(labels) / len(labels), atol=1 / 300)


def test_stratified_sample_is_seeded(labels):
    first = stratified_sample(labels, 123, np.random.default_rng(7))
    assert np.array_equal(first, stratified_sample(labels, 123, np.random.default_rng(7)))
    assert not np.array_equal(first, stratified_sample(labels, 123, np.random.default_rng(8)))


def make_split(labels) -> Split:
    images = (np.arange(len(labels))[:, None, None, None] % 256).astype(np.uint8) * np.ones((1, 28, 28, 1), np.uint8)
    return Split(images, labels)


def test_split_is_disjoint_complete_and_stratified(labels):
    train, val = split_train_val(make_split(labels), dataclasses.replace(DEFAULTS, val_fraction=0.2))
    assert len(val.labels) == 120 and len(train.labels) == 480
    np.testing.assert_array_equal(np.bincount(val.labels), np.bincount(labels) // 5)
    np.testing.assert_array_equal(np.sort(np.concatenate([train.labels, val.labels])), np.sort(labels))


def test_limit_takes_a_stratified_subset_first(labels):
    train, val = split_train_val(make_split(labels), dataclasses.replace(DEFAULTS, limit=200))
    assert len(train.labels) + len(val.labels) == 200 and len(val.labels) == 20
    assert set(np.unique(train.labels)) == set(range(10))


def write_pair(raw_dir, images, labels):
    raw_dir.mkdir(exist_ok=True)
    (raw_dir / "train-images-idx3-ubyte").write_bytes(encode_idx(images))
    (raw_dir / "train-labels-idx1-ubyte").write_bytes(encode_idx(labels))


def test_read_raw_split_adds_the_channel_axis(tmp_path, garments):
    images, labels = garments["train-images-idx3-ubyte"][:50], garments["train-labels-idx1-ubyte"][:50]
    write_pair(tmp_path, images, labels)
    split = read_raw_split(tmp_path, "train")
    assert split.images.shape == (50, 28, 28, 1) and split.images.dtype == np.uint8
    assert np.array_equal(split.images[..., 0], images) and np.array_equal(split.labels, labels)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8), "4,.*labels for 5 images"),
        (np.zeros((5, 32, 32), np.uint8), np.zeros(5, np.uint8), r"shape \(32, 32\), expected 28x28"),
        (np.zeros((5, 28, 28), np.uint8), np.full(5, 12, np.uint8), "has label 12"),
    ],
)
def test_inconsistent_raw_files_are_refused(tmp_path, images, labels, message):
    write_pair(tmp_path, images, labels)
    with pytest.raises(PipelineError, match=message):
        read_raw_split(tmp_path, "train")


def test_missing_raw_file_says_run_fetch(tmp_path):
    with pytest.raises(PipelineError, match="run `dvc repro fetch` first"):
        read_raw_split(tmp_path, "test")


def test_splits_round_trip_through_npy(tmp_path, labels):
    split = make_split(labels)
    save_split(split, "val", tmp_path)
    loaded = load_split("val", tmp_path)
    assert np.array_equal(loaded.images, split.images) and np.array_equal(loaded.labels, split.labels)
