"""bench/reference.py, the reference script: its recipe is exactly what presets/reference.yaml trains inside the
pipeline, and its network is the pipeline's `model.arch: reference`."""

import keras
import yaml

from bench import reference
from fmnist.lib.params import ModelParams
from fmnist.lib.presets import deep_merge, load_preset
from fmnist.nn.model import build_model
from tests.helpers import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"


def flat(params: dict, prefix: str = "") -> dict[str, object]:
    """{"train.early_stopping.patience": 5, ...}: every leaf of nested params with its dotted key."""
    found: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, dict) and key != "early_stopping":
            found.update(flat(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def test_the_reference_preset_trains_exactly_as_the_reference_script_does():
    # Every key of the sections the script's recipe covers: its value, or the reason the script has none.
    effective = deep_merge(
        yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), load_preset("reference", PRESETS_DIR)
    )
    wanted = flat(reference.RECIPE)
    for key, value in flat({section: effective[section] for section in reference.RECIPE}).items():
        assert key in wanted or key in reference.NOT_THE_SCRIPTS, f"{key}: the script's value is not recorded"
        if key in wanted:
            assert value == wanted[key], (
                f"{key}: the reference preset gives {value!r}, the script trains with {wanted[key]!r}"
            )
    assert set(wanted) <= set(flat(effective)) and not set(wanted) & set(reference.NOT_THE_SCRIPTS)


def test_the_scripts_network_has_the_pipelines_reference_architecture():
    recipe = reference.RECIPE["model"]
    script = reference.build_reference_model()
    keras.utils.set_random_seed(0)
    params = ModelParams(
        arch=recipe["arch"],
        width=recipe["width"],
        convs_per_block=(1, 1, 1),
        dense_units=recipe["dense_units"],
        dropout=recipe["dropout"],
        shift_px=recipe["shift_px"],
        erase_prob=recipe["erase_prob"],
        precision=recipe["precision"],
    )
    pipeline = build_model(params, seed=0)
    assert script.count_params() == pipeline.count_params()  # the same layers and widths, as trained
    shapes = [w.shape for w in script.get_weights()]
    assert shapes == [w.shape for w in pipeline.get_weights()]
