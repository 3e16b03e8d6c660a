"""Stage `prepare`: decode the IDX files, check them, split off a stratified validation set, add the user's own
labelled images (data/extra) to the training split, save uint8 arrays.

Writes data/prepared/{train,val,test}_{images,labels}.npy: images (N, 28, 28, 1) uint8, labels (N,) uint8, plus
own_test_{images,labels}.npy when some own images are held out, and metrics/data.json (own images per split and
class). Own images are converted as `fmnist predict` converts photos and never go into validation or test; with
none, the arrays are byte for byte those of the dataset alone. Images stay uint8 (4x smaller than float32); the
model scales them itself.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist.lib import files, own_data, photo  # photo: `fmnist predict`'s conversion, applied to own images
from fmnist.lib.files import Split, save_split
from fmnist.lib.idx import read_raw_split
from fmnist.lib.own_data import OWN_TEST_SPLIT, OwnDataError
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


def read_own_image(path: Path) -> np.ndarray:
    """(3, 28, 28) uint8 views of one own image: as `fmnist predict` converts it (what training sees), and simply
    resized to 28x28 in grey, and that negated (for the leak check); OwnDataError naming the file and the fix."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()  # a dangling link (a DVC symlink whose object is gone), rights
        raise OwnDataError(
            f"{path}: cannot be read ({reason}); restore it (dvc checkout, dvc pull) or remove it"
        ) from None
    try:
        converted = photo.decode(data)
        with Image.open(io.BytesIO(data)) as image:
            rgb = photo.on_white(photo.upright(image))
            left, top, right, bottom = photo.garment_box(rgb)
            grey = np.asarray(rgb.convert("L").resize((photo.SIZE, photo.SIZE), Image.Resampling.BOX), dtype=np.uint8)
    except photo.UnusableImage as exc:
        raise OwnDataError(f"{path}: {exc}; replace it with a photo of one garment, or remove it") from None
    problem = own_data.garment_size_problem((right - left, bottom - top))
    if problem:
        raise OwnDataError(f"{path}: {problem}, or remove it")
    return np.stack([converted, grey, 255 - grey])


def own_images(params: PrepareParams, test: Split) -> tuple[Split, Split]:
    """The own images under data/extra, converted and checked: (for training, held out); both empty without any."""
    found = own_data.find_images(files.EXTRA_DIR)
    views = np.stack([read_own_image(path) for path, _ in found]) if found else np.zeros((0, 3, 28, 28), np.uint8)
    labels = np.array([label for _, label in found], dtype=np.uint8)
    own_data.check_no_test_copies([path for path, _ in found], views, test.images[..., 0], test.labels)
    rng = np.random.default_rng(params.seed)  # its own generator: own images leave the dataset's split as it is
    is_test = own_data.held_out(labels, params.own_test_fraction, params.own_test_min_images, rng)
    images = views[:, 0, ..., np.newaxis]  # the converted view, (N, 28, 28, 1) like the dataset's
    return Split(images[~is_test], labels[~is_test]), Split(images[is_test], labels[is_test])


def with_own(train: Split, own: Split) -> Split:
    """The training split with the own training images after it (the very same arrays when there are none)."""
    if not len(own.labels):
        return train
    return Split(np.concatenate([train.images, own.images]), np.concatenate([train.labels, own.labels]))


def write_own_counts(train_labels: np.ndarray, own_test_labels: np.ndarray) -> None:
    """metrics/data.json (own images in training and held out, {} without any: no columns for who has none) and
    plots/own_images.csv (the same per class)."""
    totals = {"own_train": len(train_labels), "own_test": len(own_test_labels)}
    files.write_json(files.DATA_METRICS_FILE, totals if any(totals.values()) else {})
    per_class = zip(
        own_data.class_counts(train_labels).items(), own_data.class_counts(own_test_labels).values(), strict=True
    )
    lines = ["class,own_train,own_test"] + [f"{name},{train},{test}" for (name, train), test in per_class]
    files.write_bytes(files.OWN_IMAGES_PLOT, ("\n".join(lines) + "\n").encode())


def main() -> None:
    params = load_params().prepare
    train, val = split_train_val(read_raw_split(files.RAW_DIR, "train"), params)
    test = read_raw_split(files.RAW_DIR, "test")  # always the full official test set, so metrics compare
    own_train, own_test = own_images(params, test)  # every check before any write: a bad file changes nothing
    train = with_own(train, own_train)
    splits = {"train": train, "val": val, "test": test}
    if len(own_test.labels):
        splits[OWN_TEST_SPLIT] = own_test  # only then: without own images, data/prepared is the dataset's alone
    with files.atomic_dir(files.PREPARED_DIR) as tmp:
        for name, split in splits.items():
            save_split(split, name, tmp)
    write_own_counts(own_train.labels, own_test.labels)
    print(
        f"prepare: train {len(train.labels)} ({len(own_train.labels)} own), val {len(val.labels)}, test "
        f"{len(test.labels)}, own test {len(own_test.labels)} -> {files.PREPARED_DIR}"
    )
