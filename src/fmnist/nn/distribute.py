"""Where training runs (`train.distribute`): one device, several local devices, or several machines.

- none: TensorFlow's default strategy (one device, no cluster); the train stage calls Keras' `fit`.
- mirrored: tf.distribute.MirroredStrategy over `train.devices` (null: every local GPU, else the CPU). CPU
  devices beyond the first are logical devices carved out of the CPU, which is how it runs without GPUs. `fit`.
- multi_worker: tf.distribute.MultiWorkerMirroredStrategy over the cluster in $TF_CONFIG, each machine with its
  local GPUs (or its CPU). The same command runs on every machine; only the chief writes files. Keras 3's `fit`
  fails under this strategy ("Attempt to convert a value (PerReplica...)", keras-team/keras#20585, open; also
  tensorflow/tensorflow#72388), so `fit_multi_worker` below does what fit does, with a step of its own.
"""

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from fmnist.lib.errors import PipelineError
from fmnist.lib.params import TrainParams
from fmnist.lib.process import free_ports, killed_unless_done_within

GUIDE = "docs/scale-out.md, section Training on several devices and machines"


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
    fix = f"set it on every machine as {GUIDE} shows"
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

    TensorFlow itself would wait forever at start-up for a worker that never comes (checked with TensorFlow 2.21:
    still waiting after 13 minutes), so a watchdog process ends this one. Once all have joined, a worker that
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
        f"{peer_timeout_s:g} s; start the train stage on all of them ({GUIDE})"
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


def local_cluster(count: int) -> list[dict[str, Any]]:
    """TF_CONFIG values for `count` workers on this machine, on ports that are free now (tests, the benchmark)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(count)]


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
