"""params.yaml validation: the real file passes; every kind of mistake names the key."""

import copy
import re

import pytest
import yaml

from fmnist.lib.params import Params, ParamsError, load_params, parse_params
from tests.helpers import REPO_ROOT


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_repository_params_are_valid():
    params = load_params(REPO_ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.prepare.limit is None
    assert isinstance(params.train.learning_rate, float)


def with_value(raw: dict, dotted: str, value) -> dict:
    changed = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = changed
    for key in parents:
        node = node[key]
    node[last] = value
    return changed


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.epochs", "ten", "train.epochs must be an int"),
        ("train.epochs", True, "train.epochs must be an int"),  # YAML `true` is not 1
        ("train.epochs", 0, "train.epochs must be in 1..1000"),
        ("train.learning_rate", "fast", "train.learning_rate must be a number"),
        ("prepare.val_fraction", 1.5, "prepare.val_fraction must be between 0 and 1"),
        ("prepare.limit", 10, "prepare.limit must be null or >= 100"),
        ("model.arch", "resnet", "model.arch must be one of reference, bn_cnn"),
        ("train.flip", True, "train.flip must be one of none, random, alternating"),
        ("model.convs_per_block", [1, 2], "model.convs_per_block must be a list of 3 integers in 1..4"),
        ("model.convs_per_block", [1, 0, 1], "model.convs_per_block must be a list of 3 integers in 1..4"),
        ("model.convs_per_block", 2, "model.convs_per_block must be a list"),
        ("train.early_stopping.monitor", "loss", "train.early_stopping.monitor must be one of"),
        ("fetch.kaggle_handle", "zalando-research/fashionmnist", "must be pinned"),
        ("plot_errors.n_random", 0, "plot_errors.n_random must be in 1..400"),
        ("train.distribute", "horovod", "train.distribute must be one of none, mirrored, multi_worker"),
        ("train.devices", ["/cpu:0"], "train.devices must be null, or a non-empty list when train.distribute is"),
        ("train.devices", "/gpu:0", "train.devices must be a list"),
        ("train.devices", ["/gpu:0", 1], "train.devices[1] must be a str"),
        ("train.peer_timeout_s", 0, "train.peer_timeout_s must be > 0"),
        ("train.weight_decay", -0.01, "train.weight_decay must be in [0, 1)"),
    ],
)
def test_bad_values_name_the_key(raw, key, value, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        parse_params(with_value(raw, key, value))


def test_unknown_key_suggests_the_right_one(raw):
    raw["train"]["epoch"] = 5  # what `dvc exp run -S train.epoch=5` would add
    with pytest.raises(ParamsError, match=r"unknown key train\.epoch .*did you mean train\.epochs\?"):
        parse_params(raw)


def test_misspelled_section_is_named(raw):
    raw["trian"] = raw.pop("train")
    with pytest.raises(ParamsError, match=r"unknown key trian .*did you mean train\?"):
        parse_params(raw)


def test_missing_key_is_named(raw):
    del raw["inference"]["tta"]
    with pytest.raises(ParamsError, match=r"missing key inference\.tta"):
        parse_params(raw)


def test_section_that_is_not_a_mapping(raw):
    raw["model"] = 3
    with pytest.raises(ParamsError, match="model must be a mapping"):
        parse_params(raw)


def test_integer_learning_rate_is_accepted_as_float(raw):
    assert parse_params(with_value(raw, "train.learning_rate", 1)).train.learning_rate == 1.0


def test_invalid_yaml_and_missing_file(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_yaml_objects_are_not_constructed(tmp_path):
    (tmp_path / "params.yaml").write_text("fetch: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):  # safe_load refuses the tag
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("epochs", [1, 2, 100])
def test_the_default_params_accept_any_epoch_budget(raw, epochs):
    # `dvc exp run -S train.epochs=1` is the first quick check people try: the warmup is a share of the budget.
    from fmnist.stages.train import learning_rate_schedule

    params = parse_params(with_value(raw, "train.epochs", epochs)).train
    schedule = learning_rate_schedule(params, steps_per_epoch=210)
    assert float(schedule(epochs * 210)) == pytest.approx(0, abs=1e-9)  # decays to zero at the end of the budget
    assert float(schedule(round(params.warmup_fraction * epochs * 210))) == pytest.approx(params.learning_rate)


def test_precision_accepts_auto_and_the_two_policies_only(raw):
    for value in ("auto", "float32", "mixed_bfloat16"):
        assert parse_params(with_value(raw, "model.precision", value)).model.precision == value
    with pytest.raises(ParamsError, match=r"model\.precision must be one of auto, float32, mixed_bfloat16"):
        parse_params(with_value(raw, "model.precision", "float16"))


def test_mirrored_takes_device_names_as_a_tuple(raw):
    raw["train"]["distribute"] = "mirrored"
    assert parse_params(raw).train.devices is None  # every local GPU, else the CPU
    devices = parse_params(with_value(raw, "train.devices", ["/cpu:0", "/cpu:1"])).train.devices
    assert devices == ("/cpu:0", "/cpu:1")
    with pytest.raises(ParamsError, match=r"train\.devices must be null, or a non-empty list"):
        parse_params(with_value(raw, "train.devices", []))
