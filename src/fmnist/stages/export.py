"""Stage `export`: the trained model in the formats that serving systems load, each checked by loading it back.

Writes models/export/saved_model/ (a TF SavedModel whose `serve` signature takes uint8 images (N, 28, 28, 1)
and returns class probabilities (N, 10): what TF Serving, Vertex AI and SageMaker's TensorFlow containers load),
models/export/model.tflite (LiteRT, float32) and, when it keeps the accuracy, models/export/model_int8.tflite
(int8 weights, about a quarter of the size), and metrics/export.json: for each file its size, the test accuracy
of the file loaded back (SavedModel with tf.saved_model.load, TFLite with the LiteRT interpreter), and the
largest difference of its probabilities from the Keras model's (both through the same `inference` params as
`evaluate`).
"""

import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fmnist.lib import files
from fmnist.lib.dataset import IMAGE_SHAPE, load_split
from fmnist.lib.params import load_params
from fmnist.nn import inference
from fmnist.nn.model import load_model


def write_saved_model(model: keras.Model, target: Path, tta: str) -> None:
    """A SavedModel with one `serve` signature: uint8 images (N, 28, 28, 1) -> probabilities (N, 10) float32.

    The signature computes what `evaluate` and `fmnist predict` compute (fmnist.nn.inference, with the same
    test-time augmentation), so a consumer of the export gets the accuracy that metrics/test.json reports.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    # The views are drawn from a float32 copy: LiteRT has no uint8 Pad, which `flip_shift`'s shifted views need.
    # The same whole numbers 0-255, so the same probabilities.
    archive.add_endpoint(
        name="serve",
        fn=lambda images: inference.probabilities_graph(model, keras.ops.cast(images, "float32"), tta),
        input_signature=[tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name="images")],
    )
    archive.write_out(str(target), verbose=False)


def tflite_bytes(saved_model: Path, int8_weights: bool) -> bytes:
    """The SavedModel's `serve` signature as a LiteRT flatbuffer; int8 weights with dynamic-range quantisation."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serve"])
    if int8_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # weights stored as int8, activations stay float
    return converter.convert()


def saved_model_probabilities(saved_model: Path, images: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, 28, 28, 1) uint8 -> (N, 10) probabilities from the SavedModel loaded back with TensorFlow alone."""
    serve = tf.saved_model.load(str(saved_model)).signatures["serve"]
    batches = [
        next(iter(serve(images=tf.constant(images[i : i + batch_size])).values())).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches)


def tflite_probabilities(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 1) uint8 -> (N, 10) probabilities from the LiteRT interpreter, all N in one invocation."""
    with warnings.catch_warnings():  # "use ai_edge_litert": the same LiteRT runtime, as a separate package
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=2)
    runner = interpreter.get_signature_runner("serve")
    return next(iter(runner(images=images).values()))


def report(size: int, probabilities: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One format's row of metrics/export.json."""
    return {
        # kB, not bytes: the SavedModel's files vary by a few bytes from export to export, and
        # metrics/export.json should change only when something real does.
        "size_kb": round(size / 1000),
        "test_accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "max_abs_diff": float(np.abs(probabilities - reference).max()),  # vs the Keras model, probabilities
    }


def main() -> None:
    params = load_params()
    model = load_model(files.MODEL_FILE)
    test = load_split("test")
    reference = inference.Predictor(model, params.inference)(test.images)
    metrics = {"keras": report(files.MODEL_FILE.stat().st_size, reference, reference, test.labels)}
    with files.atomic_dir(files.EXPORT_DIR) as out:
        write_saved_model(model, out / "saved_model", params.inference.tta)
        saved = saved_model_probabilities(out / "saved_model", test.images, params.inference.batch_size)
        size = sum(f.stat().st_size for f in (out / "saved_model").rglob("*") if f.is_file())
        metrics["saved_model"] = report(size, saved, reference, test.labels)
        for name, int8 in (("model.tflite", False), ("model_int8.tflite", True)):
            flatbuffer = tflite_bytes(out / "saved_model", int8_weights=int8)
            row = report(len(flatbuffer), tflite_probabilities(flatbuffer, test.images), reference, test.labels)
            drop = metrics["keras"]["test_accuracy"] - row["test_accuracy"]
            row["written"] = not int8 or drop <= params.export.int8_max_accuracy_drop
            if row["written"]:
                (out / name).write_bytes(flatbuffer)
            metrics[name] = row
    files.write_json(files.EXPORT_METRICS_FILE, {"export": metrics})
    print(
        "export: " + ", ".join(f"{k} {v['test_accuracy']:.4f}" for k, v in metrics.items()) + f" -> {files.EXPORT_DIR}"
    )
