"""Presets (fmnist.lib.presets, fmnist.tools.presets): valid params once merged, and printable as `dvc exp run -S`
flags."""

import pytest
import yaml

from fmnist.lib.params import parse_params
from fmnist.lib.presets import deep_merge, load_preset
from fmnist.lib.process import PipelineError
from fmnist.tools.presets import overrides_as_flags
from tests.helpers import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_gives_valid_params(name):
    base = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    parse_params(deep_merge(base, load_preset(name, REPO_ROOT / "presets")))


def test_deep_merge_keeps_untouched_nested_keys():
    merged = deep_merge({"train": {"a": 1, "stop": {"x": 1, "y": 2}}}, {"train": {"stop": {"y": 3}}})
    assert merged == {"train": {"a": 1, "stop": {"x": 1, "y": 3}}}


def test_flags_round_trip_through_yaml_scalars():
    flags = overrides_as_flags({"train": {"epochs": 5, "learning_rate": 0.001, "stop": {"on": True}}, "m": {"s": None}})
    assert flags == [
        "-S",
        "train.epochs=5",
        "-S",
        "train.learning_rate=0.001",
        "-S",
        "train.stop.on=true",
        "-S",
        "m.s=null",
    ]


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PipelineError, match=r"no preset 'nope' .*known: .*reference"):
        load_preset("nope", REPO_ROOT / "presets")


def test_list_values_stay_one_word_for_the_shell():
    flags = overrides_as_flags({"model": {"convs_per_block": [1, 1, 1]}, "train": {"devices": ["/cpu:0", "/cpu:1"]}})
    # `dvc exp run $(fmnist preset NAME)` splits the output on spaces: a list must not contain any.
    assert " ".join(flags).split() == flags
    assert [yaml.safe_load(flag.split("=", 1)[1]) for flag in flags[1::2]] == [[1, 1, 1], ["/cpu:0", "/cpu:1"]]
