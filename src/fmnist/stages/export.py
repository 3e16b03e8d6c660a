"""Stage `export`: the served model in the formats that serving systems load, each checked by loading it back.

Writes models/export/saved_model/ (a TF SavedModel whose `serve` signature takes uint8 images (N, 28, 28, 1) and
returns the calibrated class `probabilities` (N, 10), the `unsure_score` (N,) and `unsure` (N,) bool: what TF
Serving, Vertex AI and SageMaker's TensorFlow containers load), models/export/model.tflite (LiteRT, float32) and,
when it answers as the model does, models/export/model_float16.tflite (float16 weights: half the size), and
plots/export.csv: for each file its size and the share of test images it answers as the Keras model does (the
same class, the same unsure verdict), and whether it was written. The float32 files must agree with the Keras
model to within MAX_FLOAT_DIFF, or the stage fails: an export that answers otherwise is a bug.

Not int8 weights: they would store the network in a quarter of the size and keep its accuracy, but they move the
activations by a few percent, which the unsure score's distance (fmnist.lib.calibration) reads as an unfamiliar
image: two in three test images answered otherwise.
"""

import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fmnist.lib import files
from fmnist.lib.answers import Answers
from fmnist.lib.calibration import Calibration, load_for
from fmnist.lib.files import IMAGE_SHAPE, load_split
from fmnist.lib.params import load_params
from fmnist.lib.process import PipelineError
from fmnist.nn import inference
from fmnist.nn.model import load_model

MAX_FLOAT_DIFF = 1e-4  # the float exports' largest probability difference from the Keras model (float32 rounding)
OUTPUTS = ("probabilities", "unsure_score", "unsure")  # the `serve` signature's outputs, by name


def write_saved_model(model: keras.Model, target: Path, tta: str, calibration: Calibration) -> None:
    """A SavedModel with one `serve` signature: uint8 images (N, 28, 28, 1) -> {probabilities (N, 10) float32,
    unsure_score (N,) float32, unsure (N,) bool}.

    The signature computes what `evaluate` and `fmnist predict` compute (fmnist.nn.inference, with the same
    test-time augmentation and calibration), so a consumer of the export gets the figures of metrics/test.json.
    """
    mapped = inference.with_feature_maps(model)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # The views are drawn from a float32 copy: LiteRT has no uint8 Pad, which `flip_shift`'s shifted views
        # need. The same whole numbers 0-255, so the same answers.
        parts = inference.components_graph(mapped, keras.ops.cast(images, "float32"), tta)
        return inference.answers_graph(parts, calibration)

    archive = keras.export.ExportArchive()
    archive.track(mapped)
    archive.add_endpoint(
        name="serve", fn=serve, input_signature=[tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name="images")]
    )
    archive.write_out(str(target), verbose=False)


def tflite_bytes(saved_model: Path, float16_weights: bool) -> bytes:
    """The SavedModel's `serve` signature as a LiteRT flatbuffer; with float16 weights (computed in float32)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serve"])
    if float16_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def saved_model_answers(saved_model: Path, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """(N, 28, 28, 1) uint8 -> {output name: (N, ...)} from the SavedModel loaded back with TensorFlow alone."""
    serve = tf.saved_model.load(str(saved_model)).signatures["serve"]
    batches = [serve(images=tf.constant(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return {name: np.concatenate([batch[name].numpy() for batch in batches]) for name in OUTPUTS}


def tflite_answers(flatbuffer: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 28, 28, 1) uint8 -> {output name: (N, ...)} from the LiteRT interpreter, all N in one invocation."""
    with warnings.catch_warnings():  # "use ai_edge_litert": the same LiteRT runtime, as a separate package
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=2)
    found = interpreter.get_signature_runner("serve")(images=images)
    return {name: np.asarray(found[name]) for name in OUTPUTS}


def report(name: str, size: int, found: dict[str, np.ndarray], reference: Answers) -> dict[str, Any]:
    """One file's row of plots/export.csv: its size and the share of images answered as the Keras model does."""
    same_class = found["probabilities"].argmax(axis=1) == reference.probabilities.argmax(axis=1)
    return {
        "file": name,
        # kB, not bytes: the SavedModel's files vary by a few bytes from export to export, and plots/export.csv
        # should change only when something real does.
        "size_kb": round(size / 1000),
        "agreement": float(np.mean(same_class & (found["unsure"] == reference.unsure))),
        "written": True,
    }


def check_float(name: str, found: dict[str, np.ndarray], reference: Answers) -> None:
    """Fail unless a float export's probabilities are the Keras model's to within MAX_FLOAT_DIFF."""
    difference = float(np.abs(found["probabilities"] - reference.probabilities).max())
    if difference > MAX_FLOAT_DIFF:
        raise PipelineError(
            f"{name} answers with probabilities up to {difference:.2g} from the Keras model's (at most "
            f"{MAX_FLOAT_DIFF:g} expected); the export is wrong, report it with the TensorFlow version"
        )


def main() -> None:
    params = load_params()
    model = load_model(files.MODEL_FILE)
    calibration = load_for(files.MODEL_FILE, files.CALIBRATION_FILE)
    test = load_split("test", files.PREPARED_DIR)
    reference = inference.Predictor(model, params.inference, calibration)(test.images)
    rows = []
    with files.atomic_dir(files.EXPORT_DIR) as out:
        write_saved_model(model, out / "saved_model", params.inference.tta, calibration)
        saved = saved_model_answers(out / "saved_model", test.images, params.inference.batch_size)
        check_float("the SavedModel", saved, reference)
        size = sum(f.stat().st_size for f in (out / "saved_model").rglob("*") if f.is_file())
        rows.append(report("saved_model", size, saved, reference))
        for name, float16 in (("model.tflite", False), ("model_float16.tflite", True)):
            flatbuffer = tflite_bytes(out / "saved_model", float16_weights=float16)
            found = tflite_answers(flatbuffer, test.images)
            row = report(name, len(flatbuffer), found, reference)
            if float16:
                row["written"] = row["agreement"] >= params.export.float16_min_agreement
            else:
                check_float(name, found, reference)
            if row["written"]:
                (out / name).write_bytes(flatbuffer)
            rows.append(row)
    lines = [",".join(rows[0])] + [",".join(str(value) for value in row.values()) for row in rows]
    files.write_bytes(files.EXPORT_PLOT, ("\n".join(lines) + "\n").encode())
    shown = ", ".join(f"{row['file']} agrees on {row['agreement']:.2%}" for row in rows)
    print(f"export: {shown} of the test images -> {files.EXPORT_DIR}")
