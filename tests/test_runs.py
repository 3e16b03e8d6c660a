"""fmnist.lib.runs: the records of training runs (environment, seed record) and how they are compared."""

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
        "evaluate": {
            "deps": [{"path": "src/fmnist/stages/evaluate.py", "md5": "bbb"}],
            "params": {"params.yaml": {"inference": {"tta": "flip"}}},
        },
    },
}


def lock(**changes) -> str:
    """LOCK as YAML text, with `changes` applied: {"seed": 3} / {"epochs": 10} / {"code": "ccc"}."""
    doc = yaml.safe_load(yaml.safe_dump(LOCK))
    train = doc["stages"]["train"]
    train["params"]["params.yaml"]["train"]["seed"] = changes.get("seed", 0)
    train["params"]["params.yaml"]["train"]["epochs"] = changes.get("epochs", 15)
    train["deps"][0]["md5"] = changes.get("code", "aaa")
    return yaml.safe_dump(doc)


def test_the_fingerprint_ignores_the_seed_and_sees_params_and_code():
    base = runs.fingerprint(lock())
    assert base is not None and runs.fingerprint(lock(seed=3)) == base
    assert runs.fingerprint(lock(epochs=10)) != base
    assert runs.fingerprint(lock(code="ccc")) != base
    assert runs.fingerprint(None) is None and runs.fingerprint("stages: {}") is None


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
