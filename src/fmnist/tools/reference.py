"""The seed's plain Keras script, kept verbatim in spirit as the baseline the benchmark measures against.

Conv32-Pool-Conv64-Pool-Conv64-Flatten-Dense128-Dropout0.5-Dense10, Adam, batch 32, 10 epochs,
validation_split 0.1, early stopping on val_loss with patience 5, every other setting a Keras default (XLA
included: Keras 3 compiles with XLA by default when the backend allows it). It reads the verified IDX files in
data/raw (run `dvc repro fetch` first) instead of downloading, and prints one JSON line with its results.
`fmnist bench` runs it as `python -m fmnist.tools.reference --seed K`.
"""

import argparse
import json
import time

import keras
import tensorflow as tf
from keras import layers

from fmnist.lib import paths
from fmnist.lib.errors import run_stage
from fmnist.lib.release import read_raw_split


def build_reference_model() -> keras.Model:
    """The seed network exactly as the plain script wrote it (softmax output, float inputs in [0, 1])."""
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy and TensorFlow (default: 0)")
    keras.utils.set_random_seed(parser.parse_args().seed)
    train, test = read_raw_split(paths.RAW_DIR, "train"), read_raw_split(paths.RAW_DIR, "test")
    x_train, x_test = train.images.astype("float32") / 255, test.images.astype("float32") / 255
    model = build_reference_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # As the seed script: the weights of the best validation epoch at the end (Keras 3 restores them even when
    # training runs its full 10 epochs).
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(
        x_train, train.labels, batch_size=32, epochs=10, validation_split=0.1, callbacks=[stop], verbose=2
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


if __name__ == "__main__":
    run_stage(main)
