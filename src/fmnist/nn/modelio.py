"""Save and load the model file: byte-identical for identical weights, loaded in Keras safe mode.

A `.keras` file is a zip of config.json, metadata.json and model.weights.h5. Keras stamps the save time into
metadata.json ("date_saved") and into every zip entry, and writes Python object ids (`shared_object_id`, which
only link shared objects within the file) into config.json. So the same weights would get a new hash each run
and DVC would rerun evaluate and plot_errors for nothing (keras-team/keras#15143). We rewrite the zip without
the times and with the ids renumbered 1, 2, ... in order of appearance.
"""

import json
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import keras

from fmnist.lib import atomic
from fmnist.lib.errors import PipelineError
from fmnist.nn.model import RandomShift

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def _renumber_shared_ids(node: Any, ids: dict[int, int]) -> None:
    """Replace every `shared_object_id` in a Keras config with its order of first appearance (in place)."""
    children: list[Any] = []
    if isinstance(node, dict):
        if "shared_object_id" in node:
            node["shared_object_id"] = ids.setdefault(node["shared_object_id"], len(ids) + 1)
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    for child in children:
        _renumber_shared_ids(child, ids)


def _normalized_entry(name: str, data: bytes) -> bytes:
    """The zip entry `name` without run-specific values."""
    if name == "metadata.json":
        metadata = json.loads(data)
        metadata.pop("date_saved", None)
        return json.dumps(metadata, sort_keys=True).encode()
    if name == "config.json":
        config = json.loads(data)
        _renumber_shared_ids(config, {})
        return json.dumps(config).encode()
    return data


def normalize_keras_zip(source: Path, target: Path) -> None:
    """Copy the .keras zip `source` to `target` with fixed entry times, sorted entries and no save date."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in sorted(zin.namelist()):
            entry = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            zout.writestr(entry, _normalized_entry(name, zin.read(name)))


def save_model(model: keras.Model, target: Path) -> None:
    """Save `model` to `target` (.keras) atomically and reproducibly."""
    with tempfile.TemporaryDirectory() as scratch, atomic.atomic_path(target) as tmp:
        raw = Path(scratch) / "model.keras"
        model.save(raw)
        normalize_keras_zip(raw, tmp)


KERAS_ENTRIES = ("config.json", "metadata.json", "model.weights.h5")  # what every .keras zip holds


def damage(path: Path) -> str | None:
    """What is wrong with the .keras file at `path` (not a zip, a bad CRC, an entry missing), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_entry = archive.testzip()  # reads every entry, checking its CRC
            missing = [name for name in KERAS_ENTRIES if name not in archive.namelist()]
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        return f"it is not a readable .keras zip ({exc})"
    if bad_entry:
        return f"its entry {bad_entry} is corrupted"
    return f"it lacks {', '.join(missing)}" if missing else None


def load_model(path: Path) -> keras.Model:
    """Load a model saved by `save_model`, refusing arbitrary code (safe_mode=True: no lambda layers)."""
    how_to_restore = f"`dvc pull {path}` restores the pipeline's, `dvc repro train` retrains it"
    if not Path(path).is_file():
        raise PipelineError(f"{path} is missing; {how_to_restore}")
    problem = damage(Path(path))
    if problem:
        raise PipelineError(f"{path} is damaged: {problem}; {how_to_restore}")
    return keras.models.load_model(path, custom_objects={"RandomShift": RandomShift}, compile=False, safe_mode=True)
