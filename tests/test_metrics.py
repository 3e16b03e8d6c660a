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


# --- Calibration and unsure answers --------------------------------------------------------------------------------


def test_ece_and_reliability_by_hand():
    # Two images at confidence 0.9 (one right), two at 0.6 (both right): bins hold |0.5 - 0.9| and |1.0 - 0.6|.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])
    rows = metrics.reliability(probabilities, labels, bins=10)
    assert [(r["images"], r["accuracy"]) for r in rows] == [(2, 1.0), (2, 0.5)]
    assert [r["mean_confidence"] for r in rows] == pytest.approx([0.6, 0.9])
    assert metrics.ece(probabilities, labels, bins=10) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4)


def test_a_perfectly_calibrated_model_has_no_calibration_error():
    rng = np.random.default_rng(0)
    confidence = rng.choice([0.55, 0.75, 0.95], size=200_000)
    right = rng.random(200_000) < confidence  # each image is right as often as its confidence says
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    assert metrics.ece(probabilities, np.where(right, 0, 1)) < 0.005


def test_brier_is_zero_for_certain_right_answers_and_two_for_certain_wrong_ones():
    assert metrics.brier(np.eye(3), np.arange(3)) == 0
    assert metrics.brier(np.eye(3), np.array([1, 2, 0])) == 2


def test_auroc_matches_scikit_learn_ties_included():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    inside, outside = rng.integers(0, 20, 300).astype(float), rng.integers(5, 25, 200).astype(float)  # many ties
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[inside, outside])
    assert metrics.auroc(inside, outside) == pytest.approx(expected)
    assert metrics.auroc(np.zeros(5), np.ones(5)) == 1 and metrics.auroc(np.ones(5), np.ones(5)) == 0.5


def test_fpr_at_95_tpr_counts_the_outside_images_below_the_threshold_that_keeps_95_percent():
    inside = np.arange(100, dtype=float)  # the threshold keeping 95 of them: 95 (values 0..95 are at or below)
    outside = np.array([10.0, 95.0, 96.0, 200.0])
    assert metrics.fpr_at_tpr(inside, outside) == 0.5


def test_risk_coverage_is_the_error_among_the_surest_answers():
    scores = np.array([0.1, 0.2, 0.3, 0.4])  # lowest score: surest
    right = np.array([True, True, False, False])
    rows = metrics.risk_coverage(scores, right, points=4)
    assert [(r["coverage"], r["risk"]) for r in rows] == [(0.25, 0.0), (0.5, 0.0), (0.75, 1 / 3), (1.0, 0.5)]
