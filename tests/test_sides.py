"""fmnist.lib.sides: a side read from its files (at a git revision or from a directory), the verdict on the test
accuracy between two sides, and the --fail-on option they share. The figures of calibration and unsure answers are
checked with the report's section (tests/test_report_unsure.py)."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fmnist.lib import answers, files, runs, sides
from fmnist.lib.answers import Answers, SplitAnswers
from fmnist.lib.process import PipelineError
from tests.helpers import run

LABELS = np.repeat(np.arange(10), 100)  # 1,000 test images, 100 per class


def answered(wrong: int) -> SplitAnswers:
    """The test images, the first `wrong` of them given the next class."""
    predicted = np.where(np.arange(len(LABELS)) < wrong, (LABELS + 1) % 10, LABELS)
    return SplitAnswers(LABELS, predicted, None, None)


def seeds(*accuracies: float) -> dict:
    """A metrics/seeds.json with one run per accuracy."""
    return {"seeds": {"runs": [{"accuracy": a} for a in accuracies]}}


def side(name: str, wrong: int, record: dict | None = None) -> sides.Side:
    return sides.Side(name, answered(wrong), None, record, seeds_current=True)


def written(wrong: int) -> dict[Path, str]:
    """A side's committed files: its answers, seed record, training record and validation curve."""
    probabilities = np.eye(10)[answered(wrong).predicted]
    environment = {"cpu": "a CPU", "precision": "float32"}
    return {
        files.TEST_ANSWERS_FILE: answers.split_csv(LABELS, Answers(probabilities, None, None)),
        files.SEEDS_FILE: json.dumps(seeds(0.9, 0.91)),
        files.TRAIN_METRICS_FILE: json.dumps({"step": 1, "environment": environment}),
        files.VAL_CURVE_FILE: "step\taccuracy\n0\t0.81\n1\t0.86\n",
    }


def test_a_side_is_read_from_its_answers_seed_record_environment_and_curve():
    found = sides.read_side("`main`", written(30).get)
    assert found is not None and found.name == "`main`"
    assert found.right.sum() == len(LABELS) - 30 and found.actual.tolist() == LABELS.tolist()
    assert found.environment == {"cpu": "a CPU", "precision": "float32"} and found.curve == (0.81, 0.86)
    assert runs.seed_sd(found.seeds) == pytest.approx(np.std([0.9, 0.91], ddof=1))
    assert not found.seeds_current  # no dvc.lock: the record cannot be matched to this side's code and params
    assert found.unsure is None  # an uncalibrated model's answers: no unsure flags


def test_a_side_without_answers_is_none_and_a_broken_one_names_itself_and_the_fix():
    assert sides.read_side("`v1`", {}.get) is None
    broken = {files.TEST_ANSWERS_FILE: "class,guess\nBag,Bag\n"}
    with pytest.raises(
        PipelineError, match=r"^`v1`: answers/test.csv does not start .*; run `dvc repro evaluate` there"
    ):
        sides.read_side("`v1`", broken.get)


def test_a_broken_curve_is_no_curve():
    assert sides.curve_from_tsv(None) == () and sides.curve_from_tsv("step\taccuracy\n0\tnan?\n") == ()
    assert sides.coverage_target(yaml.safe_dump({"unsure": {"coverage": 0.95}})) == 0.95
    assert sides.coverage_target("fetch: {}") is None and sides.coverage_target(": : :") is None


def test_the_reader_reads_a_revision_or_a_directory(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    (repo / "metrics/val.json").write_text('{"accuracy": 0.5}')
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "one"], repo)
    (repo / "metrics/val.json").write_text('{"accuracy": 0.6}')  # the workspace moved on
    assert sides.Reader(root=repo)(files.VAL_METRICS_FILE) == '{"accuracy": 0.6}'
    assert sides.Reader(root=repo)(files.TEST_METRICS_FILE) is None
    monkeypatch.chdir(repo)  # a revision is read from the repository here
    assert sides.Reader("HEAD")(files.VAL_METRICS_FILE) == '{"accuracy": 0.5}'
    assert sides.Reader("HEAD")(files.TEST_METRICS_FILE) is None


def test_the_verdict_weighs_the_difference_against_the_bases_seed_spread():
    spread = seeds(0.970, 0.969, 0.971)  # sd 0.001
    assert sides.accuracy_verdict(side("`main`", 30, spread), side("workspace", 31)).word == "within noise"
    assert sides.accuracy_verdict(side("`main`", 30, spread), side("workspace", 130)).word == "worse"
    assert sides.accuracy_verdict(side("`main`", 130, spread), side("workspace", 30)).word == "better"
    undecided = sides.accuracy_verdict(side("`main`", 30), side("workspace", 130))  # no seed record at the base
    assert undecided.word not in ("better", "worse")


def test_sides_that_answered_other_images_are_refused():
    other = sides.Side("workspace", SplitAnswers(LABELS[::-1], LABELS[::-1], None, None), None, None, False)
    with pytest.raises(ValueError, match="did not predict the same test images"):
        sides.accuracy_verdict(side("`main`", 0), other)


def test_fail_on_takes_each_verdict_as_one_word():
    parser = argparse.ArgumentParser()
    sides.add_fail_on(parser, "refuse on this verdict")
    assert parser.parse_args(["--fail-on", "worse", "--fail-on", "within-noise"]).fail_on == ["worse", "within-noise"]
    assert sides.option_word("within noise") == "within-noise"
    with pytest.raises(SystemExit):
        parser.parse_args(["--fail-on", "within noise"])
