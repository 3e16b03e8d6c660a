"""Stage `prepare`: decode the IDX files, check them, split off a stratified validation set, save uint8 arrays.

Writes data/prepared/{train,val,test}_{images,labels}.npy: images (N, 28, 28, 1) uint8, labels (N,) uint8.
Images stay uint8 (4x smaller than float32); the model scales them itself.
"""

import numpy as np

from fmnist.lib import files
from fmnist.lib.dataset import Split, save_split
from fmnist.lib.idx import read_raw_split
from fmnist.lib.params import PrepareParams, load_params


def stratified_sample(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `count` items drawn so each class keeps its share (largest-remainder rounding)."""
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    quotas = np.floor(exact).astype(int)
    # Hand the leftover places to the classes with the largest fractional parts (stable: lower class first).
    leftover = count - quotas.sum()
    quotas[np.argsort(-(exact - quotas), kind="stable")[:leftover]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas, strict=True)]
    return np.sort(np.concatenate(picked))


def split_train_val(train: Split, params: PrepareParams) -> tuple[Split, Split]:
    """Optionally subset the training set (`limit`), then hold out a stratified `val_fraction`."""
    rng = np.random.default_rng(params.seed)
    if params.limit is not None and params.limit < len(train.labels):
        keep = stratified_sample(train.labels, params.limit, rng)
        train = Split(train.images[keep], train.labels[keep])
    n_val = round(len(train.labels) * params.val_fraction)
    is_val = np.zeros(len(train.labels), dtype=bool)
    is_val[stratified_sample(train.labels, n_val, rng)] = True
    return Split(train.images[~is_val], train.labels[~is_val]), Split(train.images[is_val], train.labels[is_val])


def main() -> None:
    params = load_params().prepare
    train, val = split_train_val(read_raw_split(files.RAW_DIR, "train"), params)
    test = read_raw_split(files.RAW_DIR, "test")  # always the full official test set, so metrics compare
    with files.atomic_dir(files.PREPARED_DIR) as tmp:
        for name, split in (("train", train), ("val", val), ("test", test)):
            save_split(split, name, tmp)
    print(f"prepare: train {len(train.labels)}, val {len(val.labels)}, test {len(test.labels)} -> {files.PREPARED_DIR}")
