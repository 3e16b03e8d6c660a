"""The train stage's pieces: the tf.data input pipeline, one-hot targets and the learning-rate schedule."""

import dataclasses

import numpy as np
import pytest

from fmnist.dataset import Split
from fmnist.model import build_model
from fmnist.params import EarlyStoppingParams, ModelParams, TrainParams
from fmnist.train import as_float32, learning_rate_schedule, one_hot, training_batches, validation_batches

PARAMS = TrainParams(
    seed=0, batch_size=4, epochs=5, learning_rate=0.01, schedule="cosine", warmup_fraction=0.2, label_smoothing=0.1,
    deterministic=True, early_stopping=EarlyStoppingParams(enabled=False, monitor="val_loss", patience=5,
                                                           restore_best_weights=True),
)  # fmt: skip


def numbered_split(n: int) -> Split:
    """Image i is filled with the value i, so a batch tells which images it holds; label i % 10."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 28, 28, 1)).copy()
    return Split(images, (np.arange(n) % 10).astype(np.uint8))


def epoch_ids(batches) -> list[list[int]]:
    """The image numbers of each batch of one pass."""
    return [list(images[:, 0, 0, 0].numpy()) for images, _ in batches]


def test_one_pass_is_full_batches_of_distinct_images_reshuffled_every_pass():
    batches = training_batches(numbered_split(10), batch_size=4, seed=0)
    first, second = epoch_ids(batches), epoch_ids(batches)
    assert [len(b) for b in first] == [4, 4]  # the partial batch of 2 is dropped, so every step has one shape
    assert len({i for batch in first for i in batch}) == 8
    assert first != second


def test_batches_pair_each_image_with_its_one_hot_label_and_repeat_for_a_seed():
    split = numbered_split(12)
    for images, targets in training_batches(split, batch_size=4, seed=3):
        assert images.dtype.name == "uint8" and images.shape == (4, 28, 28, 1)
        np.testing.assert_array_equal(targets.numpy(), one_hot(split.labels[images[:, 0, 0, 0].numpy()]))
    assert epoch_ids(training_batches(split, 4, seed=3)) == epoch_ids(training_batches(split, 4, seed=3))


def test_validation_keeps_every_image_in_order():
    batches = epoch_ids(validation_batches(numbered_split(10), batch_size=4))
    assert [i for batch in batches for i in batch] == list(range(10))


@pytest.mark.parametrize("make", [lambda s: training_batches(s, 4, seed=0), lambda s: validation_batches(s, 4)])
def test_no_autotuning_thread(make):
    # Its backed-off sleep (up to 60 s) delayed the end of fit and the start of epochs; see train._without_autotune
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


def test_a_model_trained_in_bfloat16_is_saved_as_the_same_weights_under_float32():
    params = ModelParams(arch="bn_cnn", width=4, dense_units=16, dropout=0.0, flip=True, shift_px=1, precision="auto")
    trained = build_model(params, seed=0, policy="mixed_bfloat16")
    portable = as_float32(trained, params, seed=0)
    assert {layer.compute_dtype for layer in portable.layers if layer.name != "image"} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), portable.get_weights()))
    x = numbered_split(6).images
    # the same function, computed more exactly: bf16 keeps ~3 significant digits
    np.testing.assert_allclose(portable.predict(x, verbose=0), trained.predict(x, verbose=0), atol=0.05)
