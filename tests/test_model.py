"""The networks: shapes, the reference network's exact size, inference without augmentation, safe reproducible files."""

import dataclasses
import hashlib
import json
import zipfile

import keras
import numpy as np
import pytest

from fmnist.lib.params import ModelParams
from fmnist.lib.process import PipelineError
from fmnist.nn.model import build_model, load_model, save_model
from tests.helpers import REPO_ROOT, TINY_MODEL, run

REFERENCE_NET = ModelParams(
    arch="reference",
    width=32,
    convs_per_block=(1, 1, 1),  # bn_cnn only
    dense_units=128,
    dropout=0.5,
    shift_px=0,
    erase_prob=0.0,
    precision="float32",
)
SMALL_BN = dataclasses.replace(TINY_MODEL, dropout=0.3, shift_px=2, erase_prob=0.5)  # every training-only layer


def images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def test_the_reference_network_matches_the_reference_script_layer_for_layer():
    model = build_model(REFERENCE_NET, seed=0)
    # Conv 3x3 1->32, 32->64, 64->64; Dense 3*3*64->128; Dense 128->10 (weights + biases).
    expected = (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64) + (576 * 128 + 128) + (128 * 10 + 10)
    assert model.count_params() == expected == 130_890
    assert [layer.name for layer in model.layers if "conv" in layer.name] == ["conv1", "conv2", "conv3"]


def test_further_convs_in_a_block_work_at_its_pooled_resolution():
    model = build_model(dataclasses.replace(TINY_MODEL, convs_per_block=(1, 2, 3)), seed=0)
    convs = {layer.name: layer.output.shape[1:] for layer in model.layers if "conv" in layer.name}
    # width 4: blocks of 4, 8, 16 channels; the first conv of a block sees the block's input, then pooling halves it
    # (7 px to 4: "same" pooling keeps the last row and column).
    assert convs == {
        "conv1": (28, 28, 4),
        "conv2": (14, 14, 8),
        "conv2_2": (7, 7, 8),
        "conv3": (7, 7, 16),
        "conv3_2": (4, 4, 16),
        "conv3_3": (4, 4, 16),
    }
    # Each further conv adds 3x3 x C x C weights and batch norm's 4 x C (two of them trained, two moving averages).
    baseline = build_model(TINY_MODEL, seed=0).count_params()
    assert model.count_params() - baseline == (9 * 8 * 8 + 4 * 8) + 2 * (9 * 16 * 16 + 4 * 16)


@pytest.mark.parametrize("params", [REFERENCE_NET, SMALL_BN])
def test_uint8_images_in_logits_out(params):
    model = build_model(params, seed=0)
    assert model.input.dtype == "uint8"
    assert model.predict(images(3), verbose=0).shape == (3, 10)


def test_augmentation_only_acts_while_training():
    model = build_model(SMALL_BN, seed=0)
    x = images(4)
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))


@pytest.mark.parametrize("erase_prob", [0.25, 1.0])
def test_random_erasing_replaces_a_rectangle_in_the_share_of_images_it_names(erase_prob):
    erase = build_model(dataclasses.replace(TINY_MODEL, erase_prob=erase_prob), seed=0).get_layer("erase")
    grey = np.full((2000, 28, 28, 1), 0.5, np.float32)  # what the layer sees: images scaled to [0, 1]
    changed = np.asarray(erase(grey, training=True)) != 0.5  # (2000, 28, 28, 1)
    erased = changed.any(axis=(1, 2, 3))
    assert abs(erased.mean() - erase_prob) < 0.04  # binomial sd at most 0.011
    rows, cols = changed[erased].any(axis=2)[..., 0], changed[erased].any(axis=1)[..., 0]  # (n, 28) each
    # the changed pixels of an image fill the box their rows and columns span, up to noise landing on 0.5 itself
    assert (changed[erased].sum(axis=(1, 2, 3)) >= 0.95 * rows.sum(1) * cols.sum(1)).all()
    np.testing.assert_array_equal(erase(grey, training=False), grey)


def test_saved_file_is_byte_identical_and_loads_to_the_same_predictions(tmp_path):
    model = build_model(SMALL_BN, seed=0)
    save_model(model, tmp_path / "a.keras")
    save_model(model, tmp_path / "b.keras")
    digest = [hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("a.keras", "b.keras")]
    assert digest[0] == digest[1]
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert b"date_saved" not in archive.read("metadata.json")
    loaded = load_model(tmp_path / "a.keras")
    np.testing.assert_allclose(loaded.predict(images(5), verbose=0), model.predict(images(5), verbose=0), rtol=1e-6)


def test_safe_mode_refuses_a_model_with_code_in_it(tmp_path):
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        load_model(tmp_path / "lambda.keras")


def test_random_shift_moves_whole_images_by_at_most_max_px():
    from fmnist.nn.model import RandomShift

    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 10:14, 12:15, 0] = 1.0  # a 4x3 block, far from the border
    shift = RandomShift(2, seed=0)
    offsets = set()
    for _ in range(30):
        out = keras.ops.convert_to_numpy(shift(np.repeat(image, 4, axis=0), training=True))
        for moved in out:
            rows, cols = np.nonzero(moved[..., 0])
            assert moved.sum() == 12 and np.ptp(rows) == 3 and np.ptp(cols) == 2  # the block, whole, unchanged
            offsets.add((rows.min() - 10, cols.min() - 12))
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # every offset, none beyond
    np.testing.assert_array_equal(shift(image, training=False), image)


def test_on_one_replica_replica_dropout_draws_the_masks_of_keras_dropout():
    from fmnist.nn.model import ReplicaDropout

    ours, keras_own = ReplicaDropout(0.5, seed=3), keras.layers.Dropout(0.5, seed=3)
    ones = np.ones((8, 32), np.float32)
    first, second = (keras.ops.convert_to_numpy(ours(ones, training=True)) for _ in range(2))
    for mask in (first, second):
        np.testing.assert_array_equal(mask, keras.ops.convert_to_numpy(keras_own(ones, training=True)))
    assert not np.array_equal(first, second)  # the generator advances between calls
    np.testing.assert_array_equal(ours(ones, training=False), ones)


def test_a_model_built_for_several_replicas_shares_its_weights_layout_with_the_plain_one():
    distributed, plain = build_model(SMALL_BN, seed=0, replicas=2), build_model(SMALL_BN, seed=1)
    assert type(distributed.get_layer("dropout")).__name__ == "ReplicaDropout"
    assert distributed.get_layer("bn1").synchronized and not plain.get_layer("bn1").synchronized
    assert type(plain.get_layer("dropout")) is keras.layers.Dropout  # saved models hold Keras' own layer
    plain.set_weights(distributed.get_weights())  # how the train stage saves what it trained on replicas
    np.testing.assert_array_equal(plain.predict(images(4), verbose=0), distributed.predict(images(4), verbose=0))


# Two replicas need two logical CPUs, which only a fresh TensorFlow can set up: this runs in its own process.
# Every replica gets the same input; the script prints, per layer, whether the replicas' outputs were equal.
REPLICA_DRAWS = """
import json
import numpy as np, keras, tensorflow as tf
from fmnist.stages.train import add_logical_cpus
from fmnist.nn.model import RandomShift, ReplicaDropout
add_logical_cpus(2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    layers = {
        "keras_dropout": keras.layers.Dropout(0.5, seed=0),
        "replica_dropout": ReplicaDropout(0.5, seed=0),
        "random_shift": RandomShift(2, seed=0),
    }
images = tf.constant(np.random.default_rng(0).random((4, 28, 28, 1)), tf.float32)
equal = {}
for name, layer in layers.items():
    outputs = strategy.experimental_local_results(
        tf.function(lambda: strategy.run(lambda: layer(images, training=True)))()
    )
    equal[name] = bool(np.array_equal(outputs[0], outputs[1]))
print(json.dumps(equal))
"""


def test_each_replica_draws_its_own_dropout_mask_and_shifts():
    result = run(["python", "-c", REPLICA_DRAWS], cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT / "src")})
    equal = json.loads(result.stdout.strip().splitlines()[-1])
    # Keras' own Dropout gives both replicas one mask: half as many distinct masks as images on two replicas.
    assert equal == {"keras_dropout": True, "replica_dropout": False, "random_shift": False}


def test_mixed_precision_computes_in_bfloat16_and_leaves_the_global_policy_alone():
    model = build_model(SMALL_BN, seed=0, policy="mixed_bfloat16")
    assert model.get_layer("conv1").compute_dtype == "bfloat16" and model.get_layer("conv1").variable_dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    assert build_model(REFERENCE_NET, seed=0).get_layer("conv1").compute_dtype == "float32"  # the default policy


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # a download or copy cut short
        lambda data: b"",  # zero bytes
        lambda data: b"version https://git-lfs.github.com/spec/v1\n",  # a pointer file, not the model
        lambda data: data[:3000] + bytes(b ^ 0xFF for b in data[3000:3100]) + data[3100:],  # flipped bytes
    ],
)
def test_a_damaged_model_file_is_one_line_naming_it_and_how_to_restore_it(tmp_path, damage):
    path = tmp_path / "model.keras"
    save_model(build_model(SMALL_BN, seed=0), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(PipelineError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith(f"{path} is damaged: ") and "\n" not in message
    assert "dvc pull" in message and "dvc repro train" in message


def test_a_missing_model_file_says_how_to_get_it(tmp_path):
    with pytest.raises(PipelineError, match=r"missing; `dvc pull .*` restores .* `dvc repro train` retrains"):
        load_model(tmp_path / "model.keras")
