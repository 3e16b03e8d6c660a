"""fmnist.lib.calibration: the temperature, the class Gaussians, the units of the score, the threshold, the file."""

import dataclasses

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from scipy.special import softmax

from fmnist.lib import calibration
from fmnist.lib.calibration import Calibration, CalibrationError


def sampled(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """A label per row, drawn from softmax(logits / temperature): data whose true temperature is known."""
    chances = softmax(logits / temperature, axis=1)
    return np.array([rng.choice(len(row), p=row) for row in chances])


@pytest.mark.parametrize("true_temperature", [0.6, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 10))
    labels = sampled(logits, true_temperature, rng)
    found = calibration.fit_temperature(softmax(logits, axis=1), labels)
    assert found == pytest.approx(true_temperature, rel=0.05)


def test_temperature_scaling_keeps_each_rows_ranking_and_is_undone_by_its_inverse():
    probabilities = softmax(np.random.default_rng(1).normal(0, 2, (500, 10)), axis=1)
    scaled = calibration.temperature_scaled(probabilities, 0.5)
    np.testing.assert_array_equal(np.argsort(scaled, axis=1), np.argsort(probabilities, axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1)
    assert scaled.max(axis=1).mean() > probabilities.max(axis=1).mean()  # T < 1 sharpens
    np.testing.assert_allclose(calibration.temperature_scaled(scaled, 2.0), probabilities, rtol=1e-6)


def test_class_gaussians_give_scipys_mahalanobis_distance():
    rng = np.random.default_rng(2)
    labels = np.arange(3000) % 10
    mixing = rng.normal(size=(6, 6))
    features = rng.normal(size=(3000, 6)) @ mixing + labels[:, None] * 0.5
    means, whitening = calibration.fit_class_gaussians(features, labels, 10)
    np.testing.assert_allclose(means[3], features[labels == 3].mean(axis=0), rtol=1e-5)
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    precision = np.linalg.inv(covariance)
    np.testing.assert_allclose(whitening.astype(np.float64) @ whitening.T, precision, rtol=1e-3)
    x = rng.normal(size=6)
    found = np.sum(((x - means[7]) @ whitening) ** 2)
    assert found == pytest.approx(mahalanobis(x, means[7], precision) ** 2, rel=1e-3)


def test_dead_features_still_invert():
    rng = np.random.default_rng(3)
    features = np.concatenate([rng.normal(size=(500, 4)), np.zeros((500, 2))], axis=1)  # two channels never fire
    _, whitening = calibration.fit_class_gaussians(features, np.arange(500) % 10, 10)
    assert np.isfinite(whitening).all()


def test_the_threshold_leaves_the_asked_share_of_scores_at_or_below_it():
    scores = np.random.default_rng(4).normal(size=6000)
    threshold = calibration.coverage_threshold(scores, 0.95)
    assert 0.95 <= np.mean(scores <= threshold) <= 0.95 + 2 / 6000  # at least the share asked, one image more at most
    centre, tail = calibration.centre_and_tail(scores, 0.99)
    assert centre == pytest.approx(np.median(scores)) and np.mean(scores <= tail) == pytest.approx(0.99, abs=1e-3)


def test_a_score_that_does_not_vary_is_refused_with_the_fix():
    with pytest.raises(CalibrationError, match=r"does not vary.*dvc repro train"):
        calibration.centre_and_tail(np.ones(100), 0.99)


@pytest.fixture
def fitted() -> Calibration:
    rng = np.random.default_rng(5)
    return Calibration(
        model_md5="0" * 32,
        tta="flip",
        temperature=0.63,
        energy_centre=-9.0,
        energy_tail=-7.5,
        class_means=rng.normal(size=(10, 8)).astype(np.float32),
        whitening=np.tril(rng.normal(size=(8, 8))).astype(np.float32),
        distance_centre=40.0,
        distance_tail=90.0,
        threshold=1.04,
        coverage=0.95,
    )


def test_a_calibration_survives_its_file_unchanged(fitted, tmp_path):
    fitted.save(tmp_path / "calibration.npz")
    loaded = Calibration.load(tmp_path / "calibration.npz")
    for field in dataclasses.fields(Calibration):
        np.testing.assert_array_equal(getattr(loaded, field.name), getattr(fitted, field.name))
    assert isinstance(loaded.temperature, float) and isinstance(loaded.tta, str)


def test_a_calibration_is_used_only_with_the_model_it_was_fitted_for(fitted, tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"the model's bytes")
    with pytest.raises(CalibrationError, match=r"has no calibration beside it .*calibration.npz"):
        calibration.load_for(model)
    dataclasses.replace(fitted, model_md5=calibration.file_md5(model)).save(tmp_path / "calibration.npz")
    assert calibration.load_for(model).threshold == fitted.threshold
    model.write_bytes(b"another model's bytes")
    with pytest.raises(CalibrationError, match="was fitted for another model"):
        calibration.load_for(model)


def test_a_damaged_or_incomplete_file_is_one_line_naming_the_fix(fitted, tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match=r"broken.npz cannot be read .*dvc repro calibrate"):
        Calibration.load(tmp_path / "broken.npz")
    np.savez(tmp_path / "partial.npz", temperature=np.array(1.0))
    with pytest.raises(CalibrationError, match=r"partial\.npz lacks model_md5, tta, energy_centre"):
        Calibration.load(tmp_path / "partial.npz")
