"""fmnist.tools.report_unsure: the report's section on calibration and unsure answers, from synthetic answers, and
how it reads a side's files."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from fmnist.lib import answers, metrics, sides, stats
from fmnist.lib.answers import Answers, SplitAnswers
from fmnist.lib.files import CLASS_NAMES
from fmnist.tools import report_unsure

N = 10_000
ACTUAL = np.repeat(np.arange(10), N // 10)
RNG = np.random.default_rng(5)
WRONG = RNG.random(N) < 0.064  # accuracy 0.936
PREDICTED = np.where(WRONG, (ACTUAL + 1) % 10, ACTUAL)
UNSURE = RNG.random(N) < 0.05
TEST_SCORES = RNG.normal(0, 1, N)
DIGITS = RNG.normal(3, 1, 900)  # scores of a set that is easy to tell from the garments


def answered(confidence: float, unsure: np.ndarray = UNSURE) -> SplitAnswers:
    """Test answers with one confidence for every image (0.936 is calibrated, being the accuracy), the rest of the
    probability spread evenly over the other nine classes."""
    actual_probability = np.where(WRONG, (1 - confidence) / 9, confidence)
    return SplitAnswers(ACTUAL, PREDICTED, np.full(N, confidence), unsure, actual_probability, TEST_SCORES)


def recorded(digits_unsure: np.ndarray, **changes) -> sides.Unsure:
    """A side's unsure answers: the digits set (answered unsure where `digits_unsure`), photo_sure, target."""
    fields = {
        "not_garments": {"digits": (DIGITS, digits_unsure)},
        "photo_sure": 0.94,
        "target": 0.95,
        "images": "abc.dir",
        **changes,
    }
    return sides.Unsure(**fields)


def seeds(**figures: list[float]) -> dict:
    """A metrics/seeds.json whose runs record `figures` ({"ece": [...], "digits_unsure": [...], ...})."""
    runs = []
    for i in range(len(next(iter(figures.values())))):
        run = {"accuracy": 0.936, "recall": dict.fromkeys(CLASS_NAMES, 0.936)}
        for key, values in figures.items():
            if key.startswith("digits_"):
                run.setdefault("not_garments", {"digits": {}})["digits"][key.split("_")[1]] = values[i]
            else:
                run[key] = values[i]
        runs.append(run)
    return {"seeds": {"runs": runs}}


SPREADS = seeds(
    ece=[0.015, 0.017, 0.016],
    loss=[0.195, 0.197, 0.196],
    coverage=[0.948, 0.951, 0.95],
    sure_accuracy=[0.953, 0.955, 0.954],
    photo_sure=[0.94, 0.944, 0.942],
    digits_unsure=[0.95, 0.96, 0.955],
    digits_auroc=[0.99, 0.992, 0.991],
)
DIGITS_UNSURE = RNG.random(900) < 0.95


def side(name: str, test: SplitAnswers, unsure: sides.Unsure | None, record: dict | None = SPREADS) -> sides.Side:
    return sides.Side(name, test, None, record, True, (), unsure)


def cells(text: str, label: str) -> list[str]:
    """The cells of the table row whose first cell starts with `label`."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {label}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_better_calibrated_head_is_better_on_ece_and_nll_and_the_rest_is_within_noise():
    accuracy = 1 - WRONG.mean()
    base = side("`main`", answered(0.99), recorded(DIGITS_UNSURE))  # overconfident: ECE about 0.05
    head = side("workspace", answered(accuracy), recorded(DIGITS_UNSURE))  # calibrated: ECE 0
    text = report_unsure.section(base, head)
    assert text.splitlines()[0] == "**Moved beyond noise: ECE (calibration error) better; NLL (test loss) better.**"
    ece = cells(text, "ECE")
    base_ece = 0.99 - accuracy  # one bin: |accuracy - confidence|
    assert ece[:4] == ["ECE (calibration error), lower is better", f"{base_ece:.4f}", "0.0000", f"{-base_ece:.4f}"]
    low, high = (float(x) for x in ece[4].split(" to "))
    # A resample's accuracy is off the head's confidence either way: its ECE is 0 or more, so Δ is -base_ece at least.
    assert low == pytest.approx(-base_ece, abs=1e-4) and -base_ece < high < 0 and ece[5] == "better"
    nll = [float(-np.mean(np.log(side.test.actual_probability))) for side in (base, head)]
    assert cells(text, "NLL")[1:4] == [f"{nll[0]:.4f}", f"{nll[1]:.4f}", f"{nll[1] - nll[0]:+.4f}"]
    assert cells(text, "NLL")[5] == "better"  # far beyond 2√2 sd of the seeds' loss
    assert cells(text, "accuracy of the sure answers")[1:4] == [
        f"{(~WRONG & ~UNSURE).sum() / (~UNSURE).sum():.4f}"
    ] * 2 + ["±0.0000"]
    assert cells(text, "digits: answered unsure")[1] == f"{DIGITS_UNSURE.mean():.4f}"
    assert cells(text, "digits: AUROC")[1] == f"{metrics.auroc(TEST_SCORES, DIGITS):.4f}"
    assert "No seed spread" not in text and "Not compared" not in text


def test_coverage_gets_no_better_or_worse_but_its_distance_to_the_target():
    fewer_unsure = UNSURE & (RNG.random(N) < 0.5)  # half the unsure answers: coverage 0.975 against 0.95
    base = side("`main`", answered(0.936), recorded(DIGITS_UNSURE))
    head = side("workspace", answered(0.936, fewer_unsure), recorded(DIGITS_UNSURE))
    coverage = cells(report_unsure.section(base, head), "coverage")
    base_coverage, head_coverage = 1 - UNSURE.mean(), 1 - fewer_unsure.mean()
    assert coverage[1:3] == [f"{base_coverage:.4f}", f"{head_coverage:.4f}"]
    assert coverage[5] == (
        f"none: near 0.95 is the goal ({abs(base_coverage - 0.95):.4f} → {abs(head_coverage - 0.95):.4f} from it)"
    )


def test_a_set_answered_unsure_far_less_often_is_worse_and_figures_without_a_seed_spread_are_inconclusive():
    rarely = RNG.random(900) < 0.5
    older_record = seeds(ece=[0.015, 0.017, 0.016])  # made before the not-garment figures were recorded
    base = side("`main`", answered(0.936), recorded(DIGITS_UNSURE), older_record)
    head = side("workspace", answered(0.936), recorded(rarely))
    text = report_unsure.section(base, head)
    assert cells(text, "digits: answered unsure")[5] == "inconclusive"  # the interval excludes 0; no seed spread
    assert (
        "No seed spread at `main` (metrics/seeds.json) for NLL (test loss), accuracy of the sure answers, photo-like "
        "garments answered sure, the not-garment sets' figures: without it" in text
    )
    assert "- digits: answered unsure: inconclusive, because the 95% interval excludes 0, but no seed spread" in text
    with_spread = report_unsure.section(side("`main`", base.test, base.unsure), head)
    assert cells(with_spread, "digits: answered unsure")[5] == "worse"
    assert with_spread.splitlines()[0] == "**Moved beyond noise: digits: answered unsure worse.**"


def test_sets_of_other_images_are_not_compared_and_a_side_without_unsure_answers_is_one_line():
    base = side("`main`", answered(0.936), recorded(DIGITS_UNSURE))
    other_images = side("workspace", answered(0.936), recorded(DIGITS_UNSURE, images="def.dir"))
    text = report_unsure.section(base, other_images)
    assert "| digits" not in text and "Not compared, answered by one side only or from other images" in text
    fewer = recorded(DIGITS_UNSURE[:800], not_garments={"digits": (DIGITS[:800], DIGITS_UNSURE[:800])})
    assert "| digits" not in report_unsure.section(base, side("workspace", answered(0.936), fewer))
    legacy = side("`v1`", SplitAnswers(ACTUAL, PREDICTED, None, None), None)
    line = report_unsure.section(legacy, base)
    assert line.startswith("_`v1` recorded no unsure answers (") and len(line.splitlines()) == 1
    assert "plots/confusion.csv" in line


def files_of(tmp_path: Path, probabilities: np.ndarray, labels: np.ndarray, unsure: np.ndarray) -> dict[Path, str]:
    """A side's files as evaluate and DVC write them: answers, metrics/test.json, params.yaml, dvc.lock."""
    refused = 2
    sets = {"letters": (np.array([0.5, 2.5, 1.0]), np.array([False, True, True]), refused)}
    lock = {"stages": {"not_garments": {"outs": [{"path": "data/not_garments", "md5": "123.dir"}]}}}
    return {
        answers.SPLIT_FILES["test"]: answers.split_csv(labels, Answers(probabilities, np.zeros(len(labels)), unsure)),
        Path("answers/not_garments.csv"): answers.not_garments_csv(sets),
        Path("metrics/test.json"): '{"accuracy": 0.5, "loss": 0.25, "photo_sure": 0.9}',
        Path("params.yaml"): yaml.safe_dump({"unsure": {"coverage": 0.9}}),
        Path("dvc.lock"): yaml.safe_dump(lock),
    }


def test_a_sides_unsure_answers_are_read_from_its_files(tmp_path):
    probabilities = np.array([[0.7, 0.3] + [0.0] * 8, [0.2, 0.8] + [0.0] * 8])
    written = files_of(tmp_path, probabilities, np.array([0, 0]), np.array([False, True]))
    test = answers.read(written.get, "test")
    found = sides.read_unsure(written.get, test)
    assert found is not None
    scores, flags = found.not_garments["letters"]
    assert scores.tolist() == [0.5, 2.5, 1.0, np.inf, np.inf]  # refused photos rank above every score
    assert flags.tolist() == [False, True, True, True, True]
    assert (found.photo_sure, found.target, found.images) == (0.9, 0.9, "123.dir")
    legacy = {Path("plots/confusion.csv"): "actual,predicted\nBag,Bag\n"}
    assert sides.read_unsure(legacy.get, answers.read(legacy.get, "test")) is None


def test_each_runs_set_figures_are_the_plain_metrics():
    unsure = recorded(
        DIGITS_UNSURE, not_garments={"digits": (DIGITS, DIGITS_UNSURE), "flat": (np.full(4, np.inf), np.ones(4, bool))}
    )
    found = sides.set_values(answered(0.936), unsure)
    assert found["digits"]["unsure"] == pytest.approx(DIGITS_UNSURE.mean())
    assert found["digits"]["auroc"] == pytest.approx(metrics.auroc(TEST_SCORES, DIGITS), abs=1e-6)
    assert found["flat"] == {"unsure": 1.0, "auroc": 1.0}
    assert stats.FIGURE_RESAMPLES <= stats.BOOTSTRAP_RESAMPLES
