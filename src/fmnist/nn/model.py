"""The CNNs, built from `model` params, and their file (models/model.keras), saved and loaded.

Every model takes raw uint8 images (N, 28, 28, 1) and returns logits (N, 10). Scaling to [0, 1] is the
model's first layer, so training, evaluation and anyone loading models/model.keras share one preprocessing.
The random shift (`model.shift_px`) is part of the model too; Keras runs it only while training. Mirroring is
the train stage's input pipeline's (`train.flip`): which images it mirrors depends on the epoch.
"""

import json
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from keras import layers, ops

from fmnist.lib import files
from fmnist.lib.files import IMAGE_SHAPE, NUM_CLASSES
from fmnist.lib.params import ModelParams
from fmnist.lib.process import PipelineError


def build_model(params: ModelParams, seed: int, policy: str = "float32", replicas: int = 1) -> keras.Model:
    """The network named by `params.arch`, computing under the Keras dtype `policy`, augmentation seeded by `seed`.

    `policy` is a concrete Keras policy ("float32" or "mixed_bfloat16"), not params.precision's "auto": the train
    stage resolves that (fmnist.lib.process) and saves a float32 copy. `replicas` is how many replicas train the
    model together (`train.distribute`). With more than one, batch norm uses the statistics of the global batch, as
    on one device, so every replica keeps the same moving averages; and dropout draws its mask per replica
    (ReplicaDropout). Built for one replica, the model's dropout is Keras' own.
    """
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # each layer keeps the policy it was built with
    try:
        inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
        x = layers.Rescaling(1 / 255, name="scale")(inputs)  # (N, 28, 28, 1) in [0, 1]
        x = _augment(x, params, seed)
        if params.arch == "reference":
            x = _reference_body(x, params.width)  # (N, features)
        else:
            x = _bn_cnn_body(x, params.width, params.convs_per_block, sync_batch_norm=replicas > 1)
        x = layers.Dense(params.dense_units, activation="relu", name="hidden")(x)
        dropout = ReplicaDropout if replicas > 1 else layers.Dropout
        x = dropout(params.dropout, seed=seed, name="dropout")(x)
        # Logits in float32 whatever the policy: the softmax in the loss needs the range. (N, 10)
        outputs = layers.Dense(NUM_CLASSES, dtype="float32", name="logits")(x)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return keras.Model(inputs, outputs, name=params.arch)


def _augment(x: keras.KerasTensor, params: ModelParams, seed: int) -> keras.KerasTensor:
    """Random shift, then random erasing; identity at inference. (Mirroring is the train stage's, by epoch.)"""
    if params.shift_px:
        x = RandomShift(params.shift_px, seed=seed + 1, name="shift")(x)
    if params.erase_prob:
        # Random erasing (Zhong et al., arXiv 1708.04896): in a share of the images, a rectangle whose sides are
        # 14-57% of the image's (2-33% of each side squared) is replaced by noise, clipped to [0, 1].
        # factor=(p, p): Keras draws each image's probability between the two, so a pair fixes it at p.
        x = layers.RandomErasing(
            factor=(params.erase_prob, params.erase_prob), value_range=(0, 1), seed=seed + 2, name="erase"
        )(x)
    return x


class ReplicaSeedGenerator(keras.random.SeedGenerator):
    """Keras' SeedGenerator, except that each replica of a distributed step draws seeds of its own.

    Under a tf.distribute strategy every replica holds a copy of the generator's state and advances it alike, so
    a plain SeedGenerator hands every replica the same seed: the same dropout mask (and shifts) on each replica's
    share of the global batch, where one device draws a mask per image. Here the replica's id is folded into the
    seed. On one replica the seeds are the plain generator's, so training there is unchanged, bit for bit.
    """

    def next(self, ordered: bool = True) -> Any:
        seed = super().next(ordered)  # (2,) int64; advances the state as the plain generator does
        replica = tf.distribute.get_replica_context()  # None in a cross-replica context, where nothing is drawn
        if replica is None or replica.num_replicas_in_sync == 1:
            return seed
        return tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)


@keras.saving.register_keras_serializable(package="fmnist")
class ReplicaDropout(layers.Layer):
    """keras.layers.Dropout drawing its mask from a ReplicaSeedGenerator: other masks on other replicas.

    Same state as Keras' Dropout (one seed generator, none at rate 0), so weights copy between the two: the
    train stage trains with this layer on several replicas and saves a model with Keras' own.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        if rate > 0:
            self.seed_generator = ReplicaSeedGenerator(seed)

    def call(self, inputs: Any, training: bool = False) -> Any:
        if training and self.rate > 0:
            return keras.random.dropout(inputs, self.rate, seed=self.seed_generator)
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="fmnist")
class RandomShift(layers.Layer):
    """Move each image by its own random whole-pixel offset in [-max_px, max_px] on both axes, filling with 0.

    Keras' RandomTranslation does this with an interpolating image transform, far costlier than a whole-pixel
    shift needs; here the shift is two one-hot matrix products, a few percent of a convolution's cost.
    """

    def __init__(self, max_px: int, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_px, self.seed = max_px, seed
        self.seed_generator = ReplicaSeedGenerator(seed)  # each replica its own shifts

    def call(self, images: Any, training: bool = False) -> Any:
        if not training:
            return images
        pad = self.max_px
        height, width = images.shape[1], images.shape[2]
        padded = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # (N, H+2p, W+2p, C)
        starts = keras.random.randint((ops.shape(images)[0], 2), 0, 2 * pad + 1, seed=self.seed_generator)
        # rows[n, i] = 1 at the padded row that output row i of image n reads: (N, H, H+2p); likewise cols.
        rows = ops.one_hot(starts[:, :1] + ops.arange(height), height + 2 * pad, dtype=images.dtype)
        cols = ops.one_hot(starts[:, 1:] + ops.arange(width), width + 2 * pad, dtype=images.dtype)
        return ops.einsum("nip,npqc,njq->nijc", rows, padded, cols)  # (N, H, W, C)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_px": self.max_px, "seed": self.seed}


def _reference_body(x: keras.KerasTensor, width: int) -> keras.KerasTensor:
    """The reference network (with width 32): Conv32-Pool-Conv64-Pool-Conv64, valid padding, ReLU (no batch norm)."""
    x = layers.Conv2D(width, 3, activation="relu", name="conv1")(x)  # (N, 26, 26, w)
    x = layers.MaxPooling2D(name="pool1")(x)  # (N, 13, 13, w)
    x = layers.Conv2D(2 * width, 3, activation="relu", name="conv2")(x)  # (N, 11, 11, 2w)
    x = layers.MaxPooling2D(name="pool2")(x)  # (N, 5, 5, 2w)
    x = layers.Conv2D(2 * width, 3, activation="relu", name="conv3")(x)  # (N, 3, 3, 2w)
    return layers.Flatten(name="flatten")(x)  # (N, 18w)


def _bn_cnn_body(
    x: keras.KerasTensor, width: int, convs_per_block: tuple[int, ...], sync_batch_norm: bool
) -> keras.KerasTensor:
    """Three blocks, each halving the resolution (28 -> 14 -> 7 -> 4): conv-pool-BN-ReLU, then conv-BN-ReLU."""
    for block, (channels, convs) in enumerate(zip((width, 2 * width, 4 * width), convs_per_block, strict=True), 1):
        for conv in range(convs):
            suffix = f"{block}" if conv == 0 else f"{block}_{conv + 1}"
            # No conv bias: batch norm's shift makes it redundant.
            x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{suffix}")(x)
            if conv == 0:
                # Pooling before BN and ReLU (rather than after) runs them on a quarter of the values, for less
                # time per epoch. ReLU commutes with max-pooling; BN then normalises the pooled responses. The
                # block's further convs work at the pooled resolution, where they cost a quarter.
                # "same" padding: 7 px pool to 4, where "valid" pooling gave 3 and dropped the last row and column
                # (the right edge of an image, the left of its mirror): 4 x 4 x 4w features into the dense layer
                # instead of 3 x 3 x 4w, and more accurate on validation (docs/results.md).
                x = layers.MaxPooling2D(padding="same", name=f"pool{block}")(x)
            # momentum 0.9 (Keras' default is 0.99): the inference statistics settle within ~50 steps, so short
            # runs (a quick -S train.epochs=1, the tests' tiny slice) evaluate sensibly too.
            x = layers.BatchNormalization(momentum=0.9, synchronized=sync_batch_norm, name=f"bn{suffix}")(x)
            x = layers.ReLU(name=f"relu{suffix}")(x)
    return layers.Flatten(name="flatten")(x)  # (N, 4 * 4 * 4w)


# --- The file: byte-identical for identical weights, loaded in Keras safe mode ----------------------------------
#
# A `.keras` file is a zip of config.json, metadata.json and model.weights.h5. Keras stamps the save time into
# metadata.json ("date_saved") and into every zip entry, and writes Python object ids (`shared_object_id`, which
# only link shared objects within the file) into config.json. So the same weights would get a new hash each run
# and DVC would rerun evaluate and plot_errors for nothing (keras-team/keras#15143). `save_model` rewrites the zip
# without the times and with the ids renumbered 1, 2, ... in order of appearance.

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def _renumber_shared_ids(node: Any, ids: dict[int, int]) -> None:
    """Replace every `shared_object_id` in a Keras config with its order of first appearance (in place)."""
    children: list[Any] = []
    if isinstance(node, dict):
        if "shared_object_id" in node:
            node["shared_object_id"] = ids.setdefault(node["shared_object_id"], len(ids) + 1)
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    for child in children:
        _renumber_shared_ids(child, ids)


def _normalized_entry(name: str, data: bytes) -> bytes:
    """The zip entry `name` without run-specific values."""
    if name == "metadata.json":
        metadata = json.loads(data)
        metadata.pop("date_saved", None)
        return json.dumps(metadata, sort_keys=True).encode()
    if name == "config.json":
        config = json.loads(data)
        _renumber_shared_ids(config, {})
        return json.dumps(config).encode()
    return data


def normalize_keras_zip(source: Path, target: Path) -> None:
    """Copy the .keras zip `source` to `target` with fixed entry times, sorted entries and no save date."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in sorted(zin.namelist()):
            entry = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            zout.writestr(entry, _normalized_entry(name, zin.read(name)))


def save_model(model: keras.Model, target: Path) -> None:
    """Save `model` to `target` (.keras) atomically and reproducibly."""
    with tempfile.TemporaryDirectory() as scratch, files.atomic_path(target) as tmp:
        raw = Path(scratch) / "model.keras"
        model.save(raw)
        normalize_keras_zip(raw, tmp)


KERAS_ENTRIES = ("config.json", "metadata.json", "model.weights.h5")  # what every .keras zip holds


def damage(path: Path) -> str | None:
    """What is wrong with the .keras file at `path` (not a zip, a bad CRC, an entry missing), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_entry = archive.testzip()  # reads every entry, checking its CRC
            missing = [name for name in KERAS_ENTRIES if name not in archive.namelist()]
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        return f"it is not a readable .keras zip ({exc})"
    if bad_entry:
        return f"its entry {bad_entry} is corrupted"
    return f"it lacks {', '.join(missing)}" if missing else None


def load_model(path: Path) -> keras.Model:
    """Load a model saved by `save_model`, refusing arbitrary code (safe_mode=True: no lambda layers)."""
    how_to_restore = f"`dvc pull {path}` restores the pipeline's, `dvc repro train` retrains it"
    if not Path(path).is_file():
        raise PipelineError(f"{path} is missing; {how_to_restore}")
    problem = damage(Path(path))
    if problem:
        raise PipelineError(f"{path} is damaged: {problem}; {how_to_restore}")
    return keras.models.load_model(path, compile=False, safe_mode=True)  # our layers are registered (above)
