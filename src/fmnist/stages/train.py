"""Stage `train`: fit the CNN to the prepared training split, log every epoch with dvclive, save the model.

Reads data/prepared/{train,val}_*.npy and params.yaml's `model` and `train`. Writes models/model.keras (float32,
byte-identical for identical weights) and metrics/train/ (dvclive: metrics.json with the last epoch's values and
the environment the run had, plots/metrics/{train,eval}/*.tsv with one row per epoch).

Keras' own loop: `compile` + `fit` with callbacks, on one device or MirroredStrategy's. Only `train.distribute:
multi_worker` trains with a step loop of its own (`fit_multi_worker`), because Keras 3's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from dvclive.keras import DVCLiveCallback
from dvclive.live import Live

from fmnist.lib import files, process
from fmnist.lib.files import NUM_CLASSES, Split, load_split
from fmnist.lib.params import Flip, ModelParams, TrainParams, load_params
from fmnist.lib.process import FLOAT32, PipelineError, killed_unless_done_within
from fmnist.nn.model import build_model, save_model

# --- Data: uint8 images (B, 28, 28, 1) and one-hot targets (B, 10), batched for the step ---------------------------


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) uint8 labels -> (N, 10) float32 targets (label smoothing needs one-hot targets)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


SHUFFLE, MIRROR = 0, 1  # the two streams of random numbers drawn from train.seed


def _key(seed: int, stream: int, epoch: tf.Tensor) -> tf.Tensor:
    """The stateless random key (shape (2,) int64) of one stream in one epoch."""
    return tf.random.experimental.stateless_fold_in(tf.constant([seed, stream], tf.int64), epoch)


def mirror_flags(count: int, seed: int, epoch: tf.Tensor, flip: Flip) -> tf.Tensor:
    """(count,) bool: which of the `count` training images epoch `epoch` (int64 scalar) mirrors.

    alternating: a random half in even epochs and the other half in odd ones, so that every image is seen
    both ways every two epochs (random coins leave a quarter of the images unmirrored two epochs running);
    random: a fresh coin per image and epoch; none: no image.
    """
    if flip == "none":
        return tf.zeros([count], tf.bool)
    coins = tf.random.stateless_uniform(
        [count], _key(seed, MIRROR, epoch if flip == "random" else tf.constant(0, tf.int64)), 0, 2, tf.int64
    )
    return tf.equal((coins + epoch) % 2 if flip == "alternating" else coins, 1)


def _gathered(split: Split, batches: tf.data.Dataset) -> tf.data.Dataset:
    """Map batches of (indices, mirror flags) to (uint8 images (B, 28, 28, 1), one-hot targets (B, 10)).

    The arrays live in non-trainable variables rather than captured constants, which tf.data would embed in its
    graph. No autotuning: nothing here is tuned (fixed prefetch, sequential map), and destroying an iterator
    waits out the autotuning thread's sleep, which backs off to 60 s: `fit` returned up to a minute late.
    """
    images = tf.Variable(split.images, trainable=False)
    targets = tf.Variable(one_hot(split.labels), trainable=False)

    def gather(indices: tf.Tensor, mirror: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.gather(images, indices)  # (B, 28, 28, 1) uint8
        batch = tf.where(mirror[:, None, None, None], tf.reverse(batch, axis=[2]), batch)  # left-right
        return batch, tf.gather(targets, indices)

    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.map(gather).prefetch(1).with_options(options)


def training_batches(
    split: Split,
    batch_size: int,
    seed: int,
    flip: Flip = "none",
    epochs: int = 1,
    context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """`epochs` epochs of full batches, one after the other, each epoch its own shuffle and mirror flags.

    `batch_size` is the global batch. With several input pipelines (multi_worker), `context` says which one this
    is: every pipeline draws the same order and flags (same seed), keeps every n-th image of it and batches those
    per replica, so global step k still trains on the images at positions [k * batch_size, (k + 1) *
    batch_size) of that order, mirrored alike. Every batch has the same shape, so the step is traced once.
    """
    context = context or tf.distribute.InputContext()  # one pipeline, one replica
    count = len(split.labels)
    per_replica = context.get_per_replica_batch_size(batch_size)
    batches_here = count // batch_size * context.num_replicas_in_sync // context.num_input_pipelines

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), _key(seed, SHUFFLE, epoch))
        mirror = tf.gather(mirror_flags(count, seed, epoch, flip), order)  # (count,) in the order's positions
        pairs = tf.data.Dataset.from_tensor_slices((order, mirror))
        pairs = pairs.shard(context.num_input_pipelines, context.input_pipeline_id)
        return pairs.batch(per_replica, drop_remainder=True).take(batches_here)

    return _gathered(split, tf.data.Dataset.range(epochs).flat_map(epoch_batches))


def validation_batches(split: Split, batch_size: int) -> tf.data.Dataset:
    """Every validation image once, in order, none mirrored."""
    indices = tf.data.Dataset.range(len(split.labels)).batch(batch_size)
    return _gathered(split, indices.map(lambda batch: (batch, tf.zeros_like(batch, tf.bool))))


def check_batch_size(batch_size: int, images: int, replicas: int) -> None:
    """Fail early, naming the fix, when the global batch cannot be filled or split."""
    if batch_size > images:
        raise PipelineError(
            f"train.batch_size ({batch_size}) exceeds the {images} training images; lower it or raise prepare.limit"
        )
    if batch_size % replicas:
        raise PipelineError(
            f"train.batch_size ({batch_size}) must split evenly over the {replicas} replicas; "
            f"make it a multiple of {replicas}"
        )


# --- How it learns: AdamW on label-smoothed cross-entropy, the schedule, the callbacks ------------------------------


def learning_rate_schedule(
    params: TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Adam's learning rate: constant, or linear warmup to the peak then cosine decay to `lr_floor` x the peak."""
    if params.schedule == "constant":
        return params.learning_rate
    total_steps = params.epochs * steps_per_epoch
    warmup_steps = round(params.warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=total_steps - warmup_steps,
        alpha=params.lr_floor,
        warmup_target=params.learning_rate,
        warmup_steps=warmup_steps,
    )


def compile_model(model: keras.Model, params: TrainParams, steps_per_epoch: int) -> None:
    """Give `model` its optimizer, loss (on logits, one-hot targets) and accuracy metric."""
    optimizer = keras.optimizers.Adam(
        learning_rate_schedule(params, steps_per_epoch),
        weight_decay=params.weight_decay or None,  # decoupled, as AdamW; None: no decay ops in the step at all
    )
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=params.label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def callbacks(params: TrainParams, live: Live | None) -> list[keras.callbacks.Callback]:
    """dvclive logging (where `live` is given: the chief), plus early stopping when enabled."""
    found = [] if live is None else [DVCLiveCallback(live=live)]
    stop = params.early_stopping
    if stop.enabled:
        found.append(
            keras.callbacks.EarlyStopping(
                monitor=stop.monitor,
                patience=stop.patience,
                restore_best_weights=stop.restore_best_weights,
                verbose=1,
            )
        )
    return found


# --- Where it trains (`train.distribute`): one device, several local devices, or several machines ------------------
#
# - none: TensorFlow's default strategy (one device, no cluster); Keras' `fit`.
# - mirrored: tf.distribute.MirroredStrategy over `train.devices` (null: every local GPU, else the CPU). CPU
#   devices beyond the first are logical devices carved out of the CPU, which is how it runs without GPUs. `fit`.
# - multi_worker: tf.distribute.MultiWorkerMirroredStrategy over the cluster in $TF_CONFIG, each machine with its
#   local GPUs (or its CPU). The same command runs on every machine; only the chief writes files. Keras 3's `fit`
#   fails under this strategy ("Attempt to convert a value (PerReplica...)", keras-team/keras#20585, open; also
#   tensorflow/tensorflow#72388), so `fit_multi_worker` below does what fit does, with a step of its own.

SCALE_OUT_GUIDE = "docs/scale-out.md, section Training on several devices and machines"


def make_strategy(params: TrainParams) -> tf.distribute.Strategy:
    """The strategy that `params.distribute` names; call it before TensorFlow runs anything."""
    if params.distribute == "none":
        return tf.distribute.get_strategy()
    if params.distribute == "mirrored":
        if params.devices:
            add_logical_cpus(sum("CPU" in name.upper() for name in params.devices))
        return tf.distribute.MirroredStrategy(devices=params.devices)
    return multi_worker_strategy(params.peer_timeout_s)


def add_logical_cpus(count: int) -> None:
    """Split the CPU into `count` logical devices (/cpu:0 ... /cpu:count-1) so MirroredStrategy can use them."""
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


# --- Several machines ------------------------------------------------------------------------------------------


def cluster_from_env() -> dict[str, Any]:
    """$TF_CONFIG, checked: {"cluster": {"worker": [host:port, ...], ...}, "task": {"type": ..., "index": ...}}."""
    raw = os.environ.get("TF_CONFIG", "")
    fix = f"set it on every machine as {SCALE_OUT_GUIDE} shows"
    if not raw:
        raise PipelineError(f"train.distribute is multi_worker but TF_CONFIG is not set; {fix}")
    try:
        config = json.loads(raw)
        addresses, index = config["cluster"][config["task"]["type"]], config["task"]["index"]
        if not (isinstance(index, int) and 0 <= index < len(addresses)):
            raise IndexError(f"task index {index!r} is not one of the {len(addresses)} addresses of its type")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise PipelineError(f"TF_CONFIG is not a valid cluster and task ({type(exc).__name__}: {exc}); {fix}") from None
    return config


def multi_worker_strategy(peer_timeout_s: float) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy for $TF_CONFIG, failing within `peer_timeout_s` if a worker never joins.

    TensorFlow itself waits without end at start-up for a worker that never comes (TensorFlow 2.21), so a watchdog
    process ends this one. Once all have joined, a worker that
    dies or stops answering makes the others fail at their next step: TensorFlow's coordination service watches
    every worker's heartbeat (see `peers_lost_as_error`). Collectives get no timeout of their own: with one,
    TensorFlow 2.21 leaked a thread per all-reduce (about 40 a step) until thread creation failed.
    """
    config = cluster_from_env()
    task = f"{config['task']['type']} {config['task']['index']}"
    everyone = ", ".join(
        f"{job} {i} at {address}" for job, addresses in config["cluster"].items() for i, address in enumerate(addresses)
    )
    message = (
        f"{task} could not reach every worker in TF_CONFIG ({everyone}) within train.peer_timeout_s = "
        f"{peer_timeout_s:g} s; start the train stage on all of them ({SCALE_OUT_GUIDE})"
    )
    with killed_unless_done_within(peer_timeout_s, message):
        return tf.distribute.MultiWorkerMirroredStrategy()


@contextlib.contextmanager
def peers_lost_as_error(multi_worker: bool) -> Iterator[None]:
    """With `multi_worker` (MultiWorkerMirroredStrategy), turn TensorFlow's errors for a lost or silent worker into
    one clear PipelineError; on one machine the same error types mean something else (a kernel that aborted)."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as exc:
        if not multi_worker:
            raise
        first_line = re.sub(r"\{\{.*?\}\}\s*", "", str(exc).strip()).splitlines()[0]  # without TF's op name
        raise PipelineError(
            f"lost contact with another worker ({type(exc).__name__}: {first_line}); every worker "
            "must run to the end: restart the train stage on all of them"
        ) from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: the `chief` task, else worker 0; always true without a cluster."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().jobs:
        return True
    if "chief" in resolver.cluster_spec().jobs:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


# --- What fit does, for MultiWorkerMirroredStrategy -------------------------------------------------------------

Batches = Callable[[tf.distribute.InputContext], tf.data.Dataset]  # one input pipeline's batches of each replica


def fit_multi_worker(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    batches: Batches,
    validation: tf.data.Dataset,
    epochs: int,
    steps_per_epoch: int,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """`model.fit(...)` for a model compiled under `strategy`: the same steps, logs and callbacks per epoch.

    Each step runs the compiled loss and optimizer on every replica's share of the global batch, as fit's step
    does. Validation runs on every worker's first device over the whole split: it needs no collective, so
    workers cannot wait on each other there, and all of them get the same numbers.
    """
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)  # its variables here, not inside the step
    step = _train_step(model, strategy)
    evaluate = _evaluation(model, validation)
    stream = iter(strategy.distribute_datasets_from_function(batches))  # every epoch's batches, one after the other
    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(epochs):
        start = time.perf_counter()
        hooks.on_epoch_begin(epoch)
        sums = tf.zeros(3)
        for _ in range(steps_per_epoch):
            sums += step(*next(stream))
        loss, correct, count = sums.numpy().tolist()
        logs = {"accuracy": correct / count, "loss": loss / count, **evaluate()}
        figures = " - ".join(f"{name}: {value:.4f}" for name, value in logs.items())
        print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - {figures}", flush=True)
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:  # set by EarlyStopping
            break
    hooks.on_train_end()


def _sums(model: keras.Model, images: tf.Tensor, targets: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """(the loss to differentiate, (3,) float32 sums: loss, correct answers, images) of `model` on one batch.

    Keras divides a loss computed inside a strategy's step by the number of replicas (keras/src/losses/loss.py,
    scale_loss_for_distribution), as fit needs: the summed (all-reduced) gradient is then that of one device on
    the whole global batch. The sums undo that division.
    """
    logits = model(images, training=training)  # (B, 10) float32
    loss = model.loss(targets, logits)  # the batch's mean / replicas
    mean = loss * tf.distribute.get_strategy().num_replicas_in_sync
    count = tf.cast(tf.shape(targets)[0], tf.float32)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(targets, -1)), tf.float32))
    return loss, tf.stack([mean * count, correct, count])


def _train_step(model: keras.Model, strategy: tf.distribute.Strategy) -> Callable[..., tf.Tensor]:
    """A compiled step over one global batch; returns the global batch's (3,) sums. No XLA: it made CPUs slower."""

    def replica_step(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss, sums = _sums(model, images, targets, training=True)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return sums

    @tf.function(jit_compile=False)
    def step(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, (images, targets)), axis=None)

    return step


def _evaluation(model: keras.Model, validation: tf.data.Dataset) -> Callable[[], dict[str, float]]:
    """A function returning {"val_loss", "val_accuracy"} of `model` over `validation`, named as fit names them."""

    @tf.function(jit_compile=False)
    def batch_sums(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        return _sums(model, images, targets, training=False)[1]

    def evaluate() -> dict[str, float]:
        sums = tf.zeros(3)
        for images, targets in validation:
            sums += batch_sums(images, targets)
        loss, correct, count = sums.numpy().tolist()
        return {"val_loss": loss / count, "val_accuracy": correct / count}

    return evaluate


# --- Training ------------------------------------------------------------------------------------------------------


def train_model(
    train: Split,
    val: Split,
    model_params: ModelParams,
    params: TrainParams,
    live: Live | None,
    policy: str = FLOAT32,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.Model:
    """Build a model computing under `policy`, compile it and train it with `strategy` (default: one device).

    Per-epoch metrics go to dvclive through `live` (None on workers that write nothing).
    """
    strategy = strategy or tf.distribute.get_strategy()
    check_batch_size(params.batch_size, len(train.labels), strategy.num_replicas_in_sync)
    steps_per_epoch = len(train.labels) // params.batch_size  # the last, partial batch is dropped
    keras.utils.set_random_seed(params.seed)  # Python, NumPy and TensorFlow: the weights, dropout, shifts
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():  # variables mirrored on every replica
        model = build_model(model_params, seed=params.seed, policy=policy, replicas=strategy.num_replicas_in_sync)
        compile_model(model, params, steps_per_epoch)

    def batches(context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        return training_batches(train, params.batch_size, params.seed, params.flip, params.epochs, context)

    validation = validation_batches(val, params.batch_size)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        fit_multi_worker(model, strategy, batches, validation, params.epochs, steps_per_epoch, callbacks(params, live))
    else:
        model.fit(
            batches(),  # every epoch's batches, one after the other: fit keeps its iterator across epochs
            epochs=params.epochs,
            steps_per_epoch=steps_per_epoch,
            shuffle=False,  # each epoch's batches are shuffled already
            validation_data=validation,
            callbacks=callbacks(params, live),
            verbose=2,  # a line per epoch
        )
    return model


# --- Saving --------------------------------------------------------------------------------------------------------


def as_float32(model: keras.Model, model_params: ModelParams, seed: int) -> keras.Model:
    """The same network and weights under the float32 policy, which every CPU can run.

    Under mixed_bfloat16 the weights are float32 already, but each layer would keep computing in bf16 wherever
    the file is loaded, and bf16 convolutions abort or crawl on CPUs without native bf16.
    """
    portable = build_model(model_params, seed=seed, policy=FLOAT32)
    portable.set_weights(model.get_weights())
    return portable


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of every weight's bytes (trainable or not): equal weights, equal fingerprint."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    params = load_params()
    strategy = make_strategy(params.train)  # first: it configures TensorFlow's devices
    policy = process.training_policy(params.model.precision)  # prints which precision, and why
    train, val = load_split("train", files.PREPARED_DIR), load_split("val", files.PREPARED_DIR)
    with peers_lost_as_error(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
        if is_chief(strategy):
            with files.atomic_dir(files.TRAIN_LOG_DIR) as log_dir:  # the logs and the model, both or neither
                live = Live(dir=str(log_dir), save_dvc_exp=False, dvcyaml=False)
                # In metrics.json, committed: `fmnist report` names a change of machine, precision or versions.
                live.summary["environment"] = process.describe(policy)
                model = train_model(train, val, params.model, params.train, live, policy, strategy)
                save_model(as_float32(model, params.model, params.train.seed), files.MODEL_FILE)
            done = f"saved in float32 -> {files.MODEL_FILE}"
        else:  # another worker of a multi_worker cluster: it trains its share and writes nothing
            model = train_model(train, val, params.model, params.train, None, policy, strategy)
            done = "the chief saves the model and the logs"
    # Every worker prints the fingerprint: they must all end with the same weights.
    print(
        f"train: {model.count_params():,} parameters, trained in {policy} on {strategy.num_replicas_in_sync} "
        f"replica(s), weights {weights_fingerprint(model)}; {done}"
    )
