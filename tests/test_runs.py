"""fmnist.lib.runs: the records of training runs (environment, seed record) and how they are compared."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from fmnist.lib import runs
from fmnist.lib.stats import Spread

LOCK = {
    "schema": "2.0",
    "stages": {
        "train": {
            "deps": [{"path": "src/fmnist/stages/train.py", "md5": "aaa"}, {"path": "data/prepared", "md5": "d.dir"}],
            "params": {"params.yaml": {"model": {"width": 16}, "train": {"seed": 0, "epochs": 15}}},
        },
        "calibrate": {
            "deps": [{"path": "src/fmnist/stages/calibrate.py", "md5": "ccc"}],
            "params": {"params.yaml": {"inference": {"tta": "flip"}, "unsure": {"coverage": 0.95}}},
        },
        "evaluate": {
            "deps": [{"path": "src/fmnist/stages/evaluate.py", "md5": "bbb"}],
            "params": {"params.yaml": {"inference": {"tta": "flip"}}},
        },
        "not_garments": {"outs": [{"path": "data/not_garments", "md5": "e0f.dir"}]},
    },
}


def lock(**changes) -> str:
    """LOCK as YAML text, with `changes` applied: {"seed": 3} / {"epochs": 10} / {"code": "ccc"} /
    {"coverage": 0.9} (the calibrate stage's param)."""
    doc = yaml.safe_load(yaml.safe_dump(LOCK))
    train = doc["stages"]["train"]
    train["params"]["params.yaml"]["train"]["seed"] = changes.get("seed", 0)
    train["params"]["params.yaml"]["train"]["epochs"] = changes.get("epochs", 15)
    train["deps"][0]["md5"] = changes.get("code", "aaa")
    doc["stages"]["calibrate"]["params"]["params.yaml"]["unsure"]["coverage"] = changes.get("coverage", 0.95)
    return yaml.safe_dump(doc)


def test_the_fingerprint_ignores_the_seed_and_sees_params_and_code():
    base = runs.fingerprint(lock())
    assert base is not None and runs.fingerprint(lock(seed=3)) == base
    assert runs.fingerprint(lock(epochs=10)) != base
    assert runs.fingerprint(lock(code="ccc")) != base
    assert runs.fingerprint(lock(coverage=0.9)) != base  # the calibrate stage decides the recorded figures too
    assert runs.fingerprint(None) is None and runs.fingerprint("stages: {}") is None
    without_calibrate = yaml.safe_load(lock())
    del without_calibrate["stages"]["calibrate"]
    assert runs.fingerprint(yaml.safe_dump(without_calibrate)) is None  # a dvc.lock from before that stage


def test_differences_name_each_changed_key_with_both_values():
    committed = {"cpu": "AMD EPYC", "kernels": "eigen", "precision": "float32", "usable_cores": 2}
    current = {"cpu": "Intel Xeon", "kernels": "onednn/amx", "precision": "float32", "usable_cores": 2, "new": 1}
    assert runs.differences(committed, current) == [
        "cpu AMD EPYC → Intel Xeon",
        "kernels eigen → onednn/amx",
        "new ? → 1",
    ]
    assert runs.differences(committed, dict(committed)) == []


def test_seed_records_are_read_leniently():
    record = {
        "seeds": {"runs": [{"accuracy": 0.93, "recall": {"Bag": 0.98}}, {"accuracy": 0.94, "recall": {"Bag": 0.99}}]}
    }
    assert runs.seed_spread(record) == Spread((0.93, 0.94))
    assert runs.class_spreads(record) == {"Bag": Spread((0.98, 0.99))}
    for broken in (None, {}, {"seeds": {"runs": []}}, {"seeds": {"runs": [{"acc": 1}]}}):
        assert runs.seed_spread(broken) is None
        assert runs.class_spreads(broken) == {}
    assert runs.test_accuracy({"test": {"accuracy": 0.9}}) == 0.9
    assert runs.test_accuracy({"test": {"accuracy": True}}) is None and runs.test_accuracy(None) is None


def test_any_recorded_figure_has_a_seed_spread_and_older_records_have_none():
    runs_ = [
        {"accuracy": 0.93, "ece": 0.016, "not_garments": {"digits": {"auroc": 0.99, "unsure": 0.98}}},
        {"accuracy": 0.94, "ece": 0.020, "not_garments": {"digits": {"auroc": 0.97, "unsure": 0.95}}},
    ]
    record = {"seeds": {"runs": runs_}}
    assert runs.seed_spread(record, "ece") == Spread((0.016, 0.020))
    assert runs.seed_spread(record, "not_garments", "digits", "unsure") == Spread((0.98, 0.95))
    assert runs.seed_sd(record, "ece") == pytest.approx(float(np.std([0.016, 0.020], ddof=1)))
    older = {"seeds": {"runs": [{"accuracy": 0.93}, {"accuracy": 0.94, "ece": 0.02}]}}  # one run lacks it
    assert runs.seed_spread(older, "ece") is None and runs.seed_sd(older, "ece") is None
    assert runs.seed_spread(record, "not_garments", "letters", "auroc") is None
    assert runs.seed_sd({"seeds": {"runs": runs_[:1]}}, "ece") is None  # one run: no spread


def test_an_outputs_md5_is_read_from_dvc_lock():
    assert runs.output_md5(lock(), "not_garments", Path("data/not_garments")) == "e0f.dir"
    assert runs.output_md5(lock(), "not_garments", Path("data/other")) is None
    assert runs.output_md5(lock(), "train", Path("data/not_garments")) is None  # the stage has no outs
    assert runs.output_md5(None, "not_garments", Path("data/not_garments")) is None
