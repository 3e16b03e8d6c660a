"""Stage `train`: fit the CNN on the prepared training split, log curves with dvclive, save the model.

Writes models/model.keras (byte-identical for identical weights) and metrics/train/ (dvclive: metrics.json
with the last epoch's values, plots/metrics/{train,eval}/*.tsv with one row per epoch).
"""

import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from fmnist import atomic, paths, precision
from fmnist.dataset import NUM_CLASSES, Split, load_split
from fmnist.errors import PipelineError, run_stage
from fmnist.model import build_model
from fmnist.modelio import save_model
from fmnist.params import ModelParams, TrainParams, load_params


def seed_everything(params: TrainParams) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TensorFlow's ops deterministic too."""
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()


def learning_rate_schedule(params: TrainParams, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Adam's learning rate: constant, or linear warmup to the peak then cosine decay to zero."""
    if params.schedule == "constant":
        return params.learning_rate
    total_steps = params.epochs * steps_per_epoch
    warmup_steps = round(params.warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=total_steps - warmup_steps, alpha=0.0,
        warmup_target=params.learning_rate, warmup_steps=warmup_steps,
    )  # fmt: skip


def compile_model(model: keras.Model, params: TrainParams, steps_per_epoch: int) -> None:
    """Adam + (label-smoothed) cross-entropy on logits. No XLA: on CPU it made training slower here."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(params, steps_per_epoch)),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
        jit_compile=False,
    )


def callbacks(params: TrainParams, live: Live) -> list[keras.callbacks.Callback]:
    """dvclive logging, plus early stopping when enabled."""
    found = [DVCLiveCallback(live=live)]
    stop = params.early_stopping
    if stop.enabled:
        found.append(keras.callbacks.EarlyStopping(
            monitor=stop.monitor, patience=stop.patience, restore_best_weights=stop.restore_best_weights,
            verbose=1,
        ))  # fmt: skip
    return found


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) uint8 labels -> (N, 10) float32 targets (label smoothing needs one-hot targets)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def _gathered(split: Split, order: tf.data.Dataset) -> tf.data.Dataset:
    """Map batches of indices to (uint8 images (B, 28, 28, 1), one-hot targets (B, 10)) kept in memory.

    The arrays live in non-trainable variables rather than captured constants, which tf.data would embed in its
    graph.
    """
    images = tf.Variable(split.images, trainable=False)
    targets = tf.Variable(one_hot(split.labels), trainable=False)
    batches = order.map(lambda idx: (tf.gather(images, idx), tf.gather(targets, idx))).prefetch(1)
    return batches.with_options(_without_autotune())


def _without_autotune() -> tf.data.Options:
    """tf.data options that do not start the autotuning thread.

    Nothing here is autotuned (fixed prefetch, sequential map), and destroying an iterator waits out that
    thread's current sleep, which backs off to as much as 60 s. With it, `fit` returned up to 60 s after its last
    epoch (gdb: the main thread in ~IteratorResource, the thread in Model::OptimizeLoop), and each epoch's new
    iterator could start about 7 s late.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def training_batches(split: Split, batch_size: int, seed: int) -> tf.data.Dataset:
    """One epoch of full batches, reshuffled on every pass; only the indices are shuffled.

    Every batch has the same shape, so the train step is traced once.
    """
    count = len(split.labels)
    order = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return _gathered(split, order.batch(batch_size, drop_remainder=True))


def validation_batches(split: Split, batch_size: int) -> tf.data.Dataset:
    """Every validation image once, in order."""
    return _gathered(split, tf.data.Dataset.range(len(split.labels)).batch(batch_size))


def train_model(train: Split, val: Split, model_params: ModelParams, params: TrainParams, log_dir: Path,
                policy: str = "float32") -> keras.Model:
    """Build, compile and fit a model computing under `policy`; per-epoch metrics go to dvclive in `log_dir`."""
    steps_per_epoch = len(train.labels) // params.batch_size  # the last, partial batch is dropped
    if steps_per_epoch == 0:
        raise PipelineError(f"train.batch_size ({params.batch_size}) exceeds the {len(train.labels)} training "
                            "images; lower it or raise prepare.limit")  # fmt: skip
    seed_everything(params)
    model = build_model(model_params, seed=params.seed, policy=policy)
    compile_model(model, params, steps_per_epoch)
    live = Live(dir=str(log_dir), save_dvc_exp=False, dvcyaml=False)
    live.summary["precision"] = policy  # in metrics.json, so `dvc metrics diff` shows a change of precision
    model.fit(
        training_batches(train, params.batch_size, seed=params.seed),
        validation_data=validation_batches(val, params.batch_size),
        epochs=params.epochs,
        shuffle=False,  # training_batches shuffles; Keras would only warn that it cannot
        callbacks=callbacks(params, live),
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar in a terminal, a line per epoch in logs
    )  # fmt: skip
    return model


def as_float32(model: keras.Model, model_params: ModelParams, seed: int) -> keras.Model:
    """The same network and weights under the float32 policy, which every CPU can run.

    Under mixed_bfloat16 the weights are float32 already, but each layer would keep computing in bf16 wherever
    the file is loaded, and bf16 convolutions abort or crawl on CPUs without native bf16.
    """
    portable = build_model(model_params, seed=seed, policy="float32")
    portable.set_weights(model.get_weights())
    return portable


def main() -> None:
    params = load_params()
    train, val = load_split("train"), load_split("val")
    policy, message = precision.choose(params.model.precision, precision.native_precision())
    print(message, file=sys.stderr if message.startswith("warning") else sys.stdout, flush=True)
    with atomic.atomic_dir(paths.TRAIN_LOG_DIR) as log_dir:
        model = train_model(train, val, params.model, params.train, log_dir, policy)
        save_model(as_float32(model, params.model, params.train.seed), paths.MODEL_FILE)
    print(f"train: {model.count_params():,} parameters, trained in {policy}, saved in float32 -> {paths.MODEL_FILE}")


if __name__ == "__main__":
    run_stage(main)
