"""The train stage's pieces: the tf.data input pipeline (on one device and shared by replicas), one-hot targets,
the learning-rate schedule, Keras' fit with dvclive, and the multi-worker step loop against fit."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fmnist.lib.files import Split
from fmnist.lib.params import EarlyStoppingParams, TrainParams
from fmnist.lib.process import PipelineError
from fmnist.nn.model import build_model
from fmnist.stages.train import (
    as_float32,
    check_batch_size,
    learning_rate_schedule,
    one_hot,
    train_model,
    training_batches,
    validation_batches,
    weights_fingerprint,
)
from tests.helpers import REPO_ROOT, TINY_MODEL, bf16_env, run

PARAMS = TrainParams(
    seed=0,
    batch_size=4,
    flip="alternating",
    epochs=5,
    learning_rate=0.01,
    schedule="cosine",
    warmup_fraction=0.2,
    lr_floor=0.0,
    weight_decay=0.0,
    label_smoothing=0.1,
    deterministic=True,
    early_stopping=EarlyStoppingParams(enabled=False, monitor="val_loss", patience=5, restore_best_weights=True),
    distribute="none",
    devices=None,
    peer_timeout_s=300,
)


def numbered_split(n: int) -> Split:
    """Image i is filled with the value i, so a batch tells which images it holds; label i % 10."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 28, 28, 1)).copy()
    return Split(images, (np.arange(n) % 10).astype(np.uint8))


def random_split(n: int) -> Split:
    """n images of uniform random pixels (seeded), labels i % 10: something for a few training steps to fit."""
    return Split(np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), np.uint8), np.arange(n) % 10)


def marked_split(n: int) -> Split:
    """Image i is black but for the value i + 1 in its top-left pixel: mirrored, the top-right one."""
    images = np.zeros((n, 28, 28, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(1, n + 1)
    return Split(images, (np.arange(n) % 10).astype(np.uint8))


def epoch_ids(batches) -> list[list[int]]:
    """The image numbers of each batch."""
    return [list(images[:, 0, 0, 0].numpy()) for images, _ in batches]


def marks(images) -> list[tuple[int, bool]]:
    """(image number, whether it came mirrored) for each image of a batch of a marked_split."""
    left, right = images[:, 0, 0, 0].numpy(), images[:, 0, 27, 0].numpy()
    return [(int(max(a, b)) - 1, bool(b)) for a, b in zip(left, right, strict=True)]


def mirrored_by_epoch(split: Split, flip: str, epochs: int, batch_size: int) -> list[dict[int, bool]]:
    """For each epoch of training_batches on a marked_split: image number -> whether it came mirrored."""
    steps = len(split.labels) // batch_size
    found: list[dict[int, bool]] = [{} for _ in range(epochs)]
    for step, (images, _) in enumerate(training_batches(split, batch_size, seed=1, flip=flip, epochs=epochs)):
        found[step // steps].update(marks(images))
    return found


def test_each_epoch_is_full_batches_of_distinct_images_in_a_new_order():
    batches = epoch_ids(training_batches(numbered_split(10), batch_size=4, seed=0, epochs=2))
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # the partial batch of 2 is dropped: every step has one shape
    first, second = batches[:2], batches[2:]
    assert len({i for batch in first for i in batch}) == 8 and len({i for batch in second for i in batch}) == 8
    assert first != second


def test_alternating_mirrors_a_random_half_then_the_other_half():
    epochs = mirrored_by_epoch(marked_split(100), "alternating", epochs=3, batch_size=10)
    assert 30 <= sum(epochs[0].values()) <= 70
    assert all(epochs[1][i] != epochs[0][i] and epochs[2][i] == epochs[0][i] for i in range(100))


def test_random_draws_a_coin_per_image_and_epoch_and_none_mirrors_nothing():
    epochs = mirrored_by_epoch(marked_split(100), "random", epochs=2, batch_size=10)
    assert 30 <= sum(epochs[0].values()) <= 70
    assert 20 <= sum(epochs[0][i] == epochs[1][i] for i in range(100)) <= 80  # alternating: 0
    assert not any(mirrored_by_epoch(marked_split(20), "none", epochs=2, batch_size=10)[1].values())


def test_batches_pair_each_image_with_its_one_hot_label_and_repeat_for_a_seed():
    split = numbered_split(12)
    for images, targets in training_batches(split, batch_size=4, seed=3):
        assert images.dtype.name == "uint8" and images.shape == (4, 28, 28, 1)
        np.testing.assert_array_equal(targets.numpy(), one_hot(split.labels[images[:, 0, 0, 0].numpy()]))
    assert epoch_ids(training_batches(split, 4, seed=3, epochs=2)) == epoch_ids(training_batches(split, 4, 3, epochs=2))


def test_validation_keeps_every_image_in_order():
    batches = epoch_ids(validation_batches(numbered_split(10), batch_size=4))
    assert [i for batch in batches for i in batch] == list(range(10))


@pytest.mark.parametrize("make", [lambda s: training_batches(s, 4, seed=0), lambda s: validation_batches(s, 4)])
def test_no_autotuning_thread(make):
    # Its backed-off sleep (up to 60 s) delayed the end of fit and the start of epochs; see train._gathered
    assert make(numbered_split(8)).options().autotune.enabled is False


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0], np.uint8)), np.eye(10, dtype=np.float32)[[2, 0]])


def test_cosine_schedule_warms_up_to_the_peak_then_decays_to_zero():
    schedule = learning_rate_schedule(PARAMS, steps_per_epoch=10)  # 50 steps, the first 10 warming up
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == 0 and rates[1] == pytest.approx(0.005) and rates[2] == pytest.approx(0.01)
    assert 0 < rates[3] < 0.01 and rates[4] == pytest.approx(0, abs=1e-9)


def test_constant_schedule_is_the_learning_rate():
    assert learning_rate_schedule(dataclasses.replace(PARAMS, schedule="constant"), steps_per_epoch=10) == 0.01


def check_bf16_model_saved_as_float32() -> None:
    """A bf16 model and its float32 copy: the same weights, float32 compute, the same function."""
    params = dataclasses.replace(TINY_MODEL, shift_px=1)
    trained = build_model(params, seed=0, policy="mixed_bfloat16")
    portable = as_float32(trained, params, seed=0)
    assert {layer.compute_dtype for layer in portable.layers if layer.name != "image"} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), portable.get_weights(), strict=True))
    x = numbered_split(6).images
    # the same function, computed more exactly: bf16 keeps ~3 significant digits
    np.testing.assert_allclose(portable.predict(x, verbose=0), trained.predict(x, verbose=0), atol=0.05)


def python_here(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -c code args` in a fresh process that imports this project and its tests; output captured."""
    path = f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'src'}"
    return run([sys.executable, "-c", code, *args], REPO_ROOT, check=False, env={"PYTHONPATH": path, **(env or {})})


def test_a_model_trained_in_bfloat16_is_saved_as_the_same_weights_under_float32():
    # A process of its own, with what bf16 needs there (tests.helpers.bf16_env): under `ONEDNN_MAX_CPU_ISA=AVX2`
    # an AVX512 CPU aborts bf16 convolutions in this one.
    code = "from tests.test_train import check_bf16_model_saved_as_float32 as check; check()"
    result = python_here(code, env=bf16_env())
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(("pipelines", "replicas"), [(2, 2), (1, 2)])
def test_replicas_share_each_global_batch_as_one_device_would_take_it(pipelines, replicas):
    """Two workers (a pipeline each), or one worker with two replicas: step k covers the same 8 images, mirrored
    alike."""
    split, global_batch = marked_split(40), 8

    def pipeline(context=None):
        return training_batches(split, global_batch, seed=5, flip="alternating", epochs=2, context=context)

    one_device = [marks(images) for images, _ in pipeline()]
    per_pipeline = [
        [marks(images) for images, _ in pipeline(tf.distribute.InputContext(pipelines, i, replicas))]
        for i in range(pipelines)
    ]
    per_step = replicas // pipelines  # consecutive per-replica batches of one pipeline form one step
    for step, images in enumerate(one_device):
        shared = [i for batches in per_pipeline for b in batches[step * per_step : (step + 1) * per_step] for i in b]
        assert sorted(shared) == sorted(images) and len(shared) == global_batch
    assert all(len(batches) == len(one_device) * per_step for batches in per_pipeline)


def test_a_batch_that_cannot_be_filled_or_split_names_the_fix():
    check_batch_size(256, 54_000, 2)
    with pytest.raises(PipelineError, match=r"train.batch_size \(256\) exceeds the 100 training images"):
        check_batch_size(256, 100, 1)
    with pytest.raises(PipelineError, match=r"must split evenly over the 3 replicas; make it a multiple of 3"):
        check_batch_size(256, 54_000, 3)


def test_the_weights_fingerprint_changes_with_any_weight():
    model = build_model(TINY_MODEL, seed=0)
    before = weights_fingerprint(model)
    weights = model.get_weights()
    weights[-1][0] += 1e-6  # one bias of the classifier
    model.set_weights(weights)
    assert weights_fingerprint(model) != before and len(before) == 16


def test_weight_decay_shrinks_the_weights_it_is_given():
    split = random_split(256)
    plain, decayed = (
        train_model(
            split, split, TINY_MODEL, dataclasses.replace(PARAMS, batch_size=32, epochs=2, weight_decay=wd), None
        )
        for wd in (0.0, 0.5)
    )
    # Same seed, same batches: only the decay differs, so the classifier's kernel ends up smaller with it.
    norms = [np.linalg.norm(model.get_layer("logits").kernel.numpy()) for model in (plain, decayed)]
    assert norms[1] < norms[0]


def dvclive_curves(directory) -> dict[str, list[float]]:
    """{"train/loss": [per epoch], "eval/accuracy": [...], ...} from a dvclive directory's plots."""
    curves = {}
    for tsv in sorted((directory / "plots/metrics").glob("*/*.tsv")):
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
        assert [int(step) for step, _ in rows] == list(range(len(rows)))  # one step per epoch
        curves[f"{tsv.parent.name}/{tsv.stem}"] = [float(value) for _, value in rows]
    return curves


def test_fit_logs_train_and_validation_curves_through_dvclive_one_step_per_epoch(tmp_path):
    from dvclive import Live

    split = random_split(96)
    live = Live(dir=str(tmp_path), save_dvc_exp=False, dvcyaml=False)
    train_model(split, split, TINY_MODEL, dataclasses.replace(PARAMS, batch_size=32, epochs=3), live)
    curves = dvclive_curves(tmp_path)
    assert set(curves) == {"train/loss", "train/accuracy", "eval/loss", "eval/accuracy"}
    assert all(len(values) == 3 for values in curves.values())
    assert json.loads((tmp_path / "metrics.json").read_text())["eval"]["loss"] == curves["eval/loss"][-1]


# The multi-worker loop, in a process of its own: the strategy must exist before TensorFlow starts its runtime.
# One worker (no TF_CONFIG): one replica, so the loop and fit compute the same steps, up to the order of float
# operations. The loop is also stopped after its first epoch by a callback, as EarlyStopping stops it.
LOOP_AND_FIT = """
import dataclasses, sys
from pathlib import Path
import keras, tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
from dvclive import Live
from fmnist.stages.train import fit_multi_worker, train_model
from tests.helpers import TINY_MODEL, garment_release
from tests.test_train import PARAMS
from fmnist.lib.files import Split
arrays = garment_release(train=256, test=64)
train = Split(arrays["train-images-idx3-ubyte"][..., None], arrays["train-labels-idx1-ubyte"])
val = Split(arrays["t10k-images-idx3-ubyte"][..., None], arrays["t10k-labels-idx1-ubyte"])
params = dataclasses.replace(PARAMS, batch_size=32, epochs=2, flip="random")
for name, where in (("loop", strategy), ("fit", None)):
    live = Live(dir=str(Path(sys.argv[1]) / name), save_dvc_exp=False, dvcyaml=False)
    train_model(train, val, TINY_MODEL, params, live, strategy=where)

class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True
        print("epochs run:", epoch + 1)

model = train_model(train, val, TINY_MODEL, dataclasses.replace(params, epochs=1), None, strategy=strategy)
batches = lambda context: tf.data.Dataset.from_tensors((train.images[:32], tf.one_hot(train.labels[:32], 10))).repeat()
fit_multi_worker(model, strategy, batches, tf.data.Dataset.from_tensors(
    (val.images, tf.one_hot(val.labels, 10))), 5, 2, [StopAfterFirstEpoch()])
"""


@pytest.mark.slow
def test_the_multi_worker_loop_takes_the_steps_that_fit_takes_and_honours_stop_training(tmp_path):
    result = python_here(LOOP_AND_FIT, str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    loop, fit = dvclive_curves(tmp_path / "loop"), dvclive_curves(tmp_path / "fit")
    assert set(loop) == set(fit) == {"train/loss", "train/accuracy", "eval/loss", "eval/accuracy"}
    for name in fit:
        np.testing.assert_allclose(loop[name], fit[name], atol=1e-4, err_msg=name)
    assert result.stdout.count("epochs run:") == 1
