"""Metrics on arrays small enough to check by hand."""

import numpy as np
import pytest

from fmnist.lib import metrics

TRUE = np.array([0, 0, 0, 1, 1, 2])
PRED = np.array([0, 0, 1, 1, 2, 2])


def test_confusion_matrix_rows_are_true_classes():
    np.testing.assert_array_equal(metrics.confusion_matrix(TRUE, PRED, 3), [[2, 1, 0], [0, 1, 1], [0, 0, 1]])


def test_per_class_scores_by_hand():
    scores = metrics.per_class_scores(metrics.confusion_matrix(TRUE, PRED, 3))
    np.testing.assert_allclose(scores["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(scores["f1"], [0.8, 0.5, 2 / 3])
    np.testing.assert_array_equal(scores["support"], [3, 2, 1])


def test_a_class_never_predicted_scores_zero_not_nan():
    scores = metrics.per_class_scores(metrics.confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2))
    assert scores["precision"][1] == 0 and scores["f1"][1] == 0 and not np.isnan(scores["f1"]).any()


def test_summary_accuracy_and_loss():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    result = metrics.summary(probabilities, np.array([0, 1, 1]))
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["loss"] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)
    assert result["macro_recall"] == pytest.approx((1 + 0.5) / 2)


def test_most_confused_pairs_are_sorted_and_skip_zero():
    matrix = np.array([[5, 3, 0], [1, 4, 0], [0, 7, 2]])
    assert metrics.most_confused_pairs(matrix, 5) == [(2, 1, 7), (0, 1, 3), (1, 0, 1)]
