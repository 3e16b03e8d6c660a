"""fmnist.tools.report_compare: verdicts, banners and per-class rows from synthetic predictions."""

import numpy as np
import pytest

from fmnist.lib.answers import SplitAnswers
from fmnist.lib.files import CLASS_NAMES
from fmnist.lib.sides import Side
from fmnist.tools import report_compare

N = 10_000
ACTUAL = np.repeat(np.arange(10), N // 10)  # 1,000 test images of each class
ENVIRONMENT = {"cpu": "AMD EPYC", "kernels": "eigen", "precision": "float32"}


def predictions(wrong: np.ndarray) -> np.ndarray:
    """ACTUAL with the images at indices `wrong` given the next class instead."""
    predicted = ACTUAL.copy()
    predicted[wrong] = (predicted[wrong] + 1) % 10
    return predicted


def seeds(accuracies: list[float], current: bool = True) -> dict:
    """A metrics/seeds.json with these accuracies (every class's recall = the accuracy)."""
    runs = [{"accuracy": a, "recall": dict.fromkeys(CLASS_NAMES, a)} for a in accuracies]
    return {"seeds": {"runs": runs, "fingerprint": "f" if current else "old"}}


def answered(wrong: np.ndarray) -> SplitAnswers:
    """The test answers of a model that gets the images at `wrong` wrong (classes only, as an older commit's)."""
    return SplitAnswers(ACTUAL, predictions(wrong), None, None)


def side(name: str, wrong: np.ndarray, record: dict | None = None, environment: dict | None = ENVIRONMENT):
    return Side(name, answered(wrong), environment, record, seeds_current=True)


RNG = np.random.default_rng(0)
BASE_WRONG = RNG.choice(N, 640, replace=False)  # accuracy 0.936
SPREAD = seeds([0.9359, 0.9323, 0.9339, 0.9350, 0.9331])  # sd 0.0014: seed noise ±0.0040


def test_a_model_that_differs_as_much_as_a_seed_change_is_within_noise():
    head_wrong = np.concatenate([BASE_WRONG[:500], RNG.choice(np.setdiff1d(np.arange(N), BASE_WRONG), 150)])
    top = report_compare.comparison(side("`main`", BASE_WRONG, SPREAD), side("workspace", head_wrong)).top
    assert top.startswith("**Test accuracy: `main` 0.9360 → workspace 0.9350 (-0.0010; 95% CI ")
    assert top.splitlines()[0].endswith(": within noise**")
    assert "150 right only at `main`, 140 only in the workspace" in top
    assert "over 5 seeds" in top and "To settle it" not in top


def test_a_clearly_worse_model_is_worse_and_its_classes_are_named():
    worse_wrong = np.union1d(BASE_WRONG, np.arange(6000, 6400))  # 400 more mistakes, all on Shirt (class 6)
    found = report_compare.comparison(side("`main`", BASE_WRONG, SPREAD), side("workspace", worse_wrong))
    top, sections = found.top, found.sections
    assert top.splitlines()[0].endswith(": worse**")
    per_class = dict(sections)["Per class (recall)"]
    assert per_class.startswith("Classes that moved beyond noise: Shirt.")
    shirt = next(line for line in per_class.splitlines() if line.startswith("| Shirt |"))
    assert shirt.endswith("| worse |")


def test_without_a_seed_record_nothing_is_called_better_or_worse_and_the_way_to_settle_it_is_given():
    worse_wrong = np.union1d(BASE_WRONG, np.arange(6000, 6400))
    top = report_compare.comparison(side("`main`", BASE_WRONG), side("workspace", worse_wrong)).top
    assert top.splitlines()[0].endswith(": inconclusive**")
    assert "No seed record at `main`" in top and "To settle it: `fmnist seeds --n 5`" in top


def test_different_environments_open_the_report_with_what_differs():
    bf16 = {**ENVIRONMENT, "kernels": "onednn/amx", "precision": "mixed_bfloat16"}
    top = report_compare.comparison(
        side("`main`", BASE_WRONG, SPREAD), side("workspace", BASE_WRONG, environment=bf16)
    ).top
    banner = top.splitlines()[0]
    assert banner.startswith("> **Different environments.**")
    assert "kernels eigen → onednn/amx; precision float32 → mixed_bfloat16" in banner
    same = report_compare.comparison(side("`main`", BASE_WRONG, SPREAD), side("workspace", BASE_WRONG)).top
    assert "Different environments" not in same


def test_two_seed_records_are_compared_when_the_head_has_its_own():
    head = Side("workspace", answered(BASE_WRONG), ENVIRONMENT, seeds([0.9410, 0.9402, 0.9415]), True)
    sections = report_compare.comparison(side("`main`", BASE_WRONG, SPREAD), head).sections
    over_seeds = dict(sections)["Over seeds"]
    assert "`main` 0.9340 ± 0.0014 (n = 5) → workspace 0.9409 ± 0.0007 (n = 3)" in over_seeds
    assert "**better**" in over_seeds


def test_models_that_answered_other_test_images_are_refused():
    other = Side("workspace", SplitAnswers(ACTUAL[::-1], ACTUAL[::-1], None, None), None, None, False)
    with pytest.raises(ValueError, match=r"did not predict the same test images \(answers/test.csv differs"):
        report_compare.comparison(side("`main`", BASE_WRONG), other)
