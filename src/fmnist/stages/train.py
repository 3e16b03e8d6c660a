"""Stage `train`: train the CNN on the prepared training split, log curves with dvclive, save the model.

Writes models/model.keras (byte-identical for identical weights) and metrics/train/ (dvclive: metrics.json
with the last epoch's values, plots/metrics/{train,eval}/*.tsv with one row per epoch).

One training loop serves every `train.distribute` strategy (fmnist.nn.distribute): a compiled step run on each
replica with `strategy.run`, Keras callbacks called once per epoch. Not `model.fit`: Keras 3's fit fails under
MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)", keras-team/keras#20585).
"""

import hashlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from dvclive.keras import DVCLiveCallback
from dvclive.live import Live

from fmnist.lib import atomic, paths, runs
from fmnist.lib.dataset import NUM_CLASSES, Split, load_split
from fmnist.lib.errors import PipelineError, run_stage
from fmnist.lib.params import Flip, ModelParams, Params, TrainParams, load_params
from fmnist.nn import distribute, environment, precision
from fmnist.nn.model import FLOAT32, build_model
from fmnist.nn.modelio import save_model

# A compiled training step: (images, one-hot targets) of one global batch -> (summed loss, correct count).
Step = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def seed_everything(params: TrainParams) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TensorFlow's ops deterministic too."""
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()


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


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) uint8 labels -> (N, 10) float32 targets (label smoothing needs one-hot targets)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def _gathered(split: Split, batches: tf.data.Dataset) -> tf.data.Dataset:
    """Map batches of (indices, mirror flags) to (uint8 images (B, 28, 28, 1), one-hot targets (B, 10)).

    The arrays live in non-trainable variables rather than captured constants, which tf.data would embed in its
    graph.
    """
    images = tf.Variable(split.images, trainable=False)
    targets = tf.Variable(one_hot(split.labels), trainable=False)

    def gather(indices: tf.Tensor, mirror: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.gather(images, indices)  # (B, 28, 28, 1) uint8
        batch = tf.where(mirror[:, None, None, None], tf.reverse(batch, axis=[2]), batch)  # left-right
        return batch, tf.gather(targets, indices)

    return batches.map(gather).prefetch(1).with_options(_without_autotune())


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


def training_batches(
    split: Split,
    batch_size: int,
    seed: int,
    flip: Flip = "none",
    epochs: int = 1,
    context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """`epochs` epochs of full batches, each epoch its own shuffle and mirror flags, drawn from `seed`.

    `batch_size` is the global batch. Under a distribution strategy, `context` says which input pipeline this is
    (one per worker) and how many replicas share the batch: every pipeline draws the same order and flags (same
    seed), keeps every n-th image of it, and batches those per replica, so global step k still trains on the
    images at positions [k * batch_size, (k + 1) * batch_size) of that order, mirrored alike, whatever the number
    of replicas. Every batch has the same shape, so the train step is traced once.
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


def loss_function(params: TrainParams) -> keras.losses.Loss:
    """Label-smoothed cross-entropy on logits, one value per image: (B, 10), (B, 10) -> (B,)."""
    return keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=params.label_smoothing, reduction=None
    )


def loss_and_correct(targets: tf.Tensor, logits: tf.Tensor, per_image_loss: tf.Tensor) -> tf.Tensor:
    """(summed loss, number of images whose top logit is the true class) of a batch, shape (2,) float32."""
    correct = tf.equal(tf.argmax(logits, axis=-1), tf.argmax(targets, axis=-1))
    return tf.stack([tf.reduce_sum(per_image_loss), tf.reduce_sum(tf.cast(correct, tf.float32))])


def make_train_step(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: keras.losses.Loss,
    global_batch: int,
) -> Step:
    """A compiled step that trains every replica on its share of one global batch.

    Returns the global batch's (summed loss, correct count). No XLA: on CPU it made training slower here.
    """

    def replica_step(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(images, training=True)  # (B / replicas, 10) float32
            per_image = loss_fn(targets, logits)  # (B / replicas,)
            # Divided by the global batch: the optimizer sums the replicas' gradients (an all-reduce), which
            # makes the step that of one device on the whole batch.
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss_and_correct(targets, logits, per_image)

    @tf.function(jit_compile=False)
    def step(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, (images, targets)), axis=None)

    return step


def make_evaluate(
    model: keras.Model, loss_fn: keras.losses.Loss, batches: tf.data.Dataset
) -> Callable[[], dict[str, float]]:
    """A function returning {"val_loss", "val_accuracy"} of `model` on `batches`.

    Every worker evaluates the whole validation split itself, on its first device: it needs no collective,
    so workers cannot wait on each other here, and all of them get the same numbers.
    """

    @tf.function(jit_compile=False)
    def batch_sums(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        logits = model(images, training=False)
        return loss_and_correct(targets, logits, loss_fn(targets, logits))

    def evaluate() -> dict[str, float]:
        total, count = tf.zeros(2), 0
        for images, targets in batches:
            total, count = total + batch_sums(images, targets), count + len(targets)
        loss, correct = (total / count).numpy().tolist()
        return {"val_loss": loss, "val_accuracy": correct}

    return evaluate


def train_model(
    train: Split,
    val: Split,
    model_params: ModelParams,
    params: TrainParams,
    live: Live | None,
    policy: str = FLOAT32,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.Model:
    """Build a model computing under `policy` and train it with `strategy` (default: one device).

    Per-epoch metrics go to dvclive through `live` (None on workers that write nothing).
    """
    strategy = strategy or tf.distribute.get_strategy()
    steps_per_epoch = len(train.labels) // params.batch_size  # the last, partial batch is dropped
    check_batch_size(params.batch_size, len(train.labels), strategy.num_replicas_in_sync)
    seed_everything(params)
    with strategy.scope():  # variables mirrored on every replica
        model = build_model(model_params, seed=params.seed, policy=policy, replicas=strategy.num_replicas_in_sync)
        optimizer = keras.optimizers.Adam(
            learning_rate_schedule(params, steps_per_epoch),
            use_ema=params.ema_momentum > 0,  # a moving average of the weights, swapped in after the last epoch
            ema_momentum=params.ema_momentum or 0.99,  # (Keras' default; unused when the average is off)
            weight_decay=params.weight_decay or None,  # None: no decay ops in the step at all
        )
        optimizer.build(model.trainable_variables)  # its moment variables, here rather than inside the step
    loss_fn = loss_function(params)
    step = make_train_step(strategy, model, optimizer, loss_fn, params.batch_size)
    batches = strategy.distribute_datasets_from_function(
        lambda context: training_batches(train, params.batch_size, params.seed, params.flip, params.epochs, context)
    )
    evaluate = make_evaluate(model, loss_fn, validation_batches(val, params.batch_size))
    stream = iter(batches)  # every epoch's batches, one after the other
    run_epochs(
        model,
        lambda: run_epoch(step, stream, steps_per_epoch, params.batch_size),
        evaluate,
        params.epochs,
        callbacks(params, live),
    )
    if params.ema_momentum > 0:
        optimizer.finalize_variable_values(model.trainable_variables)  # the averaged weights replace the last ones
        recompute_batch_norm(strategy, model, batches)
    return model


BATCH_NORM_STEPS = 100  # training batches that re-estimate batch norm's statistics: 0.9^100 of the old ones remain


def recompute_batch_norm(strategy: tf.distribute.Strategy, model: keras.Model, batches: Any) -> None:
    """Re-estimate batch norm's moving mean and variance for the model's current (averaged) weights.

    They were gathered for the weights of each step, not for their average. Forward passes in training mode on
    training batches update them (momentum 0.9, fmnist.nn.model) and change no weight.
    """

    @tf.function(jit_compile=False)
    def forward(images: tf.Tensor) -> None:
        strategy.run(lambda x: model(x, training=True), (images,))

    for images, _ in itertools.islice(iter(batches), BATCH_NORM_STEPS):
        forward(images)


def check_batch_size(batch_size: int, images: int, replicas: int) -> None:
    """Fail early, naming the fix, when the global batch cannot be split or filled."""
    if batch_size > images:
        raise PipelineError(
            f"train.batch_size ({batch_size}) exceeds the {images} training images; lower it or raise prepare.limit"
        )
    if batch_size % replicas:
        raise PipelineError(
            f"train.batch_size ({batch_size}) must split evenly over the {replicas} replicas; "
            f"make it a multiple of {replicas}"
        )


def run_epoch(step: Step, stream: Iterator[Any], steps: int, global_batch: int) -> dict[str, float]:
    """The next `steps` (distributed) training batches of `stream`; the epoch's mean accuracy and loss."""
    total = tf.zeros(2)
    for images, targets in itertools.islice(stream, steps):
        total += step(images, targets)
    loss, correct = (total / (steps * global_batch)).numpy().tolist()
    return {"accuracy": correct, "loss": loss}


def run_epochs(
    model: keras.Model,
    train_epoch: Callable[[], dict[str, float]],
    evaluate: Callable[[], dict[str, float]],
    epochs: int,
    callback_list: list[keras.callbacks.Callback],
) -> None:
    """The epoch loop, calling the Keras callbacks (dvclive, early stopping) as `fit` would, one line per epoch."""
    hooks = keras.callbacks.CallbackList(callback_list, model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(epochs):
        start = time.perf_counter()
        hooks.on_epoch_begin(epoch)
        logs = {**train_epoch(), **evaluate()}
        figures = " - ".join(f"{name}: {value:.4f}" for name, value in logs.items())
        print(f"epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - {figures}", flush=True)
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:  # set by EarlyStopping
            break
    hooks.on_train_end()


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


def train_and_save(
    train: Split, val: Split, params: Params, policy: str, strategy: tf.distribute.Strategy
) -> keras.Model:
    """The chief's part: train with dvclive logging to metrics/train/, save models/model.keras; both atomic."""
    with atomic.atomic_dir(paths.TRAIN_LOG_DIR) as log_dir:
        live = Live(dir=str(log_dir), save_dvc_exp=False, dvcyaml=False)
        # In metrics.json: `dvc metrics diff` shows a change of machine, precision or versions beside the metrics.
        live.summary["environment"] = environment.describe(policy)
        model = train_model(train, val, params.model, params.train, live, policy, strategy)
        save_model(as_float32(model, params.model, params.train.seed), paths.MODEL_FILE)
    return model


def main() -> None:
    params = load_params()
    strategy = distribute.make_strategy(params.train)  # first: it configures TensorFlow's devices
    train, val = load_split("train"), load_split("val")
    choice = precision.choose(params.model.precision, precision.native_precision())
    print(choice.message, file=sys.stderr if choice.is_warning else sys.stdout, flush=True)
    policy = choice.policy
    notice = runs.environment_notice(
        runs.environment_of(runs.json_or_none(runs.committed_text(paths.TRAIN_METRICS_FILE))),
        environment.describe(policy),
        runs.test_accuracy(runs.json_or_none(runs.committed_text(paths.TEST_METRICS_FILE))),
        runs.seed_spread(runs.json_or_none(runs.committed_text(paths.SEEDS_FILE))),
    )
    if notice:
        print(notice, flush=True)
    with distribute.peers_lost_as_error():
        if distribute.is_chief(strategy):
            model = train_and_save(train, val, params, policy, strategy)
            done = f"saved in float32 -> {paths.MODEL_FILE}"
        else:  # another worker of a multi_worker cluster: it trains its share and writes nothing
            model = train_model(train, val, params.model, params.train, None, policy, strategy)
            done = "the chief saves the model and the logs"
    # Every worker prints the fingerprint: they must all end with the same weights.
    print(
        f"train: {model.count_params():,} parameters, trained in {policy} on {strategy.num_replicas_in_sync} "
        f"replica(s), weights {weights_fingerprint(model)}; {done}"
    )


if __name__ == "__main__":
    run_stage(main)
