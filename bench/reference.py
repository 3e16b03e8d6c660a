"""The reference script: the plain Keras script this project started from, kept verbatim in spirit as the
baseline the training bench measures against.

    python -m bench.reference [--seed K]

Conv32-Pool-Conv64-Pool-Conv64-Flatten-Dense128-Dropout0.5-Dense10, Adam, batch 32, 10 epochs,
validation_split 0.1, early stopping on val_loss with patience 5, every other setting a Keras default (no XLA on a
CPU-only machine: Keras 3's jit_compile="auto" turns it on only where a GPU is present). It reads the verified IDX
files in data/raw (run `dvc repro fetch` first) instead of downloading, and prints one JSON line with its results.
`python -m bench.training` runs it once per seed.

RECIPE says the same in params.yaml's terms: presets/reference.yaml, laid over params.yaml, must give exactly
these values (tests/test_bench_reference.py checks every key), so that the `reference` preset is this script's
training inside the pipeline.
"""

import argparse
import json
import time
from typing import Any

import keras
import tensorflow as tf
from keras import layers

from bench import cli
from fmnist.lib import files
from fmnist.lib.idx import read_raw_split

# The script's recipe in params.yaml's terms: the values below are the ones the script trains with.
RECIPE: dict[str, dict[str, Any]] = {
    "model": {
        "arch": "reference",
        "width": 32,
        "dense_units": 128,
        "dropout": 0.5,
        "shift_px": 0,
        "erase_prob": 0.0,
        "precision": "float32",
    },
    "train": {
        "batch_size": 32,
        "epochs": 10,
        "learning_rate": 0.001,  # Keras' Adam default
        "schedule": "constant",
        "weight_decay": 0.0,  # plain Adam
        "label_smoothing": 0.0,
        "flip": "none",
        "early_stopping": {"enabled": True, "monitor": "val_loss", "patience": 5, "restore_best_weights": True},
        "distribute": "none",
    },
    "inference": {"tta": "none"},
}
# The other keys of those sections, and why the script has no value for them.
NOT_THE_SCRIPTS = {
    "model.convs_per_block": "arch reference has no blocks",
    "train.seed": "each run's own, as the script's --seed",
    "train.warmup_fraction": "no schedule to warm up",
    "train.lr_floor": "no schedule to decay",
    "train.deterministic": "the pipeline's own promise (op determinism), not a training choice",
    "train.devices": "distribute none",
    "train.peer_timeout_s": "distribute none",
    "inference.batch_size": "speed only: results do not depend on it",
}


def build_reference_model() -> keras.Model:
    """The reference network as the plain script wrote it (softmax output, float inputs in [0, 1]), widths from
    RECIPE."""
    width, dense, dropout = (RECIPE["model"][key] for key in ("width", "dense_units", "dropout"))
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(width, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(2 * width, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(2 * width, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(dense, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(10, activation="softmax"),
        ]
    )


def main(argv: list[str]) -> int:
    """Train and test once with the script's recipe; print its one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy and TensorFlow (default: 0)")
    keras.utils.set_random_seed(parser.parse_args(argv).seed)
    train, test = read_raw_split(files.RAW_DIR, "train"), read_raw_split(files.RAW_DIR, "test")
    x_train, x_test = train.images.astype("float32") / 255, test.images.astype("float32") / 255
    model, recipe = build_reference_model(), RECIPE["train"]
    optimizer = keras.optimizers.Adam(recipe["learning_rate"])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # As the plain script: the weights of the best validation epoch at the end (Keras 3 restores them even when
    # training runs its full 10 epochs).
    stopping = {key: value for key, value in recipe["early_stopping"].items() if key != "enabled"}
    start = time.perf_counter()
    history = model.fit(
        x_train,
        train.labels,
        batch_size=recipe["batch_size"],
        epochs=recipe["epochs"],
        validation_split=0.1,
        callbacks=[keras.callbacks.EarlyStopping(**stopping)],
        verbose=2,
    )
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    loss, accuracy = model.evaluate(x_test, test.labels, verbose=0)
    print(
        json.dumps(
            {
                "test_accuracy": accuracy,
                "test_loss": loss,
                "fit_seconds": fit_seconds,
                "evaluate_seconds": time.perf_counter() - start,
                "epochs": len(history.history["loss"]),
                "parameters": model.count_params(),
                "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
            }
        )
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
