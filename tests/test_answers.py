"""fmnist.lib.answers: each image's answer written as evaluate writes it and read back as the report, the sweep and
the release gate read it, an older commit's confusion file read in its place, and broken files named."""

from pathlib import Path

import numpy as np
import pytest

from fmnist.lib import answers
from fmnist.lib.answers import Answers
from fmnist.lib.files import CLASS_NAMES

LABELS = np.array([0, 1, 2, 9])
PROBABILITIES = np.array(
    [[0.9] + [0.1 / 9] * 9, [0.05, 0.6, 0.35] + [0.0] * 7, [0.2, 0.7, 0.1] + [0.0] * 7, [0.0] * 9 + [1.0]]
)


def test_a_calibrated_models_answers_round_trip_with_their_confidences_and_unsure_flags():
    text = answers.split_csv(LABELS, Answers(PROBABILITIES, np.array([0.1, 2.5, 0.3, 0.0]), np.array([0, 1, 0, 0])))
    assert text.splitlines()[0] == ",".join(answers.HEADER)
    found = answers.read({answers.SPLIT_FILES["test"]: text}.get, "test")
    assert found is not None
    assert found.actual.tolist() == LABELS.tolist() and found.predicted.tolist() == [0, 1, 1, 9]
    assert found.right.tolist() == [True, True, False, True]
    assert found.confidence.tolist() == pytest.approx([0.9, 0.6, 0.7, 1.0])
    assert found.actual_probability.tolist() == pytest.approx([0.9, 0.6, 0.1, 1.0])
    assert found.unsure.tolist() == [False, True, False, False]
    assert found.unsure_score.tolist() == pytest.approx([0.1, 2.5, 0.3, 0.0])


def test_an_uncalibrated_models_answers_have_no_unsure_flags():
    text = answers.split_csv(LABELS, Answers(PROBABILITIES, None, None))
    found = answers.parse_split(text, Path("answers/val.csv"))
    assert found.confidence is not None and found.unsure is None and found.unsure_score is None


def test_an_older_commits_confusion_file_stands_in_with_the_classes_only():
    legacy = "actual,predicted\n" + "".join(f"{CLASS_NAMES[a]},{CLASS_NAMES[a]}\n" for a in LABELS)
    found = answers.read({answers.LEGACY_FILES["val"]: legacy}.get, "val")
    assert found is not None and found.right.all() and found.confidence is None and found.unsure is None
    assert answers.read({}.get, "val") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "does not start with the header actual,predicted"),
        ("actual,predicted\nBag,Hat\n", "has a row that does not start with two class names"),
        (",".join(answers.HEADER) + "\nBag,Bag,high,0.9,,\n", "has a row without its confidences or its unsure answer"),
    ],
)
def test_a_broken_answers_file_is_named_with_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=f"^answers/test\\.csv {problem}"):
        answers.parse_split(text, Path("answers/test.csv"))


def test_the_not_garment_answers_round_trip_with_refused_photos_as_missing_scores():
    sets = {"digits": (np.array([0.5, 3.0]), np.array([False, True]), 1), "noise": (np.array([9.0]), np.ones(1), 0)}
    found = answers.parse_not_garments(answers.not_garments_csv(sets))
    scores, flags = found["digits"]
    assert scores[:2].tolist() == [0.5, 3.0] and np.isnan(scores[2]) and flags.tolist() == [False, True, True]
    assert found["noise"][1].tolist() == [True]
    with pytest.raises(ValueError, match=r"answers/not_garments\.csv does not start with set,unsure_score,unsure"):
        answers.parse_not_garments("name,score\n")
