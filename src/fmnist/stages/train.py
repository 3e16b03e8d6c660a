"""Stage `train`: fit the CNN to the prepared training split, log every epoch with dvclive, save the model.

Reads data/prepared/{train,val}_*.npy and params.yaml's `model` and `train`. Writes models/model.keras (float32,
byte-identical for identical weights) and metrics/train/ (dvclive: metrics.json with the last epoch's values and
the environment the run had, plots/metrics/{train,eval}/*.tsv with one row per epoch).

Keras' own loop: `compile` + `fit` with callbacks, on one device or MirroredStrategy's. Only `train.distribute:
multi_worker` trains with a step loop of its own (fmnist.nn.distribute), because Keras 3's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""

import hashlib

import keras
import numpy as np
import tensorflow as tf
from dvclive.keras import DVCLiveCallback
from dvclive.live import Live

from fmnist.lib import files
from fmnist.lib.dataset import NUM_CLASSES, Split, load_split
from fmnist.lib.errors import PipelineError
from fmnist.lib.params import Flip, ModelParams, TrainParams, load_params
from fmnist.nn import distribute, machine
from fmnist.nn.machine import FLOAT32
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
        distribute.fit_multi_worker(
            model, strategy, batches, validation, params.epochs, steps_per_epoch, callbacks(params, live)
        )
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
    strategy = distribute.make_strategy(params.train)  # first: it configures TensorFlow's devices
    policy = machine.training_policy(params.model.precision)  # prints which precision, and why
    train, val = load_split("train", files.PREPARED_DIR), load_split("val", files.PREPARED_DIR)
    with distribute.peers_lost_as_error(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
        if distribute.is_chief(strategy):
            with files.atomic_dir(files.TRAIN_LOG_DIR) as log_dir:  # the logs and the model, both or neither
                live = Live(dir=str(log_dir), save_dvc_exp=False, dvcyaml=False)
                # In metrics.json, committed: `fmnist report` names a change of machine, precision or versions.
                live.summary["environment"] = machine.describe(policy)
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
