"""Figures: the right number of panels, and PNG files that actually show something."""

import numpy as np
from matplotlib.image import imread

from fmnist.lib import plots
from fmnist.lib.files import CLASS_NAMES
from fmnist.stages.plot_errors import misclassified_indices, sample_indices, save_figure


def probabilities_for(predicted: np.ndarray) -> np.ndarray:
    return np.eye(10, dtype=np.float32)[predicted] * 0.9 + 0.01


def test_prediction_grid_shows_one_panel_per_image(garments, tmp_path):
    images = garments["t10k-images-idx3-ubyte"][:10, ..., None]
    true = garments["t10k-labels-idx1-ubyte"][:10]
    fig = plots.prediction_grid(images, true, probabilities_for((true + 1) % 10), "ten wrong guesses")
    assert sum(1 for ax in fig.axes if ax.images) == 10
    guess, truth = fig.axes[0].get_title().split("\n")
    assert guess.startswith(f"{CLASS_NAMES[(true[0] + 1) % 10]} (") and truth == f"true: {CLASS_NAMES[true[0]]}"
    save_figure(fig, tmp_path / "grid.png")
    pixels = imread(tmp_path / "grid.png")
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # not blank


def test_empty_grid_still_renders(tmp_path):
    fig = plots.prediction_grid(np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, int), np.zeros((0, 10)), "none")
    save_figure(fig, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_confused_pairs_chart_has_a_bar_per_pair(tmp_path):
    fig = plots.confused_pairs_chart([(6, 0, 120), (4, 2, 80)], np.full(10, 1000), "mistakes")
    assert len(fig.axes[0].patches) == 2
    assert fig.axes[0].get_yticklabels()[0].get_text() == "Shirt → T-shirt/top"
    save_figure(fig, tmp_path / "pairs.png")
    assert imread(tmp_path / "pairs.png")[..., :3].std() > 0.05


def test_misclassified_indices_and_seeded_sampling():
    true, predicted = np.array([1, 2, 3, 4, 5]), np.array([1, 0, 3, 0, 0])
    np.testing.assert_array_equal(misclassified_indices(true, predicted), [1, 3, 4])
    first = sample_indices(np.arange(100), 10, seed=10)
    assert np.array_equal(first, sample_indices(np.arange(100), 10, seed=10)) and len(set(first)) == 10
    assert len(sample_indices(np.array([4, 7]), 10, seed=10)) == 2  # fewer candidates than asked for


def test_training_curves_draw_train_and_validation_for_loss_and_accuracy(tmp_path):
    curves = {"train": {"loss": [2.0, 1.2, 0.9], "accuracy": [0.5, 0.7, 0.8]}}
    curves["validation"] = {"loss": [1.8, 1.1, 1.0], "accuracy": [0.55, 0.72, 0.78]}
    fig = plots.training_curves(curves, "how it learned")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert [[list(line.get_ydata()) for line in ax.lines] for ax in fig.axes] == [
        [curves["train"]["loss"], curves["validation"]["loss"]],
        [curves["train"]["accuracy"], curves["validation"]["accuracy"]],
    ]
    save_figure(fig, tmp_path / "curves.png")
    assert imread(tmp_path / "curves.png")[..., :3].std() > 0.05  # not blank


def test_the_frontier_draws_a_point_per_row_and_a_line_per_reported_figure(tmp_path):
    points = [("reference script", 1.0, 0.905, 0.003), ("default", 0.95, 0.937, 0.002), ("fast", 0.25, 0.919, 0.001)]
    fig = plots.frontier(points, [("elsewhere", 0.945)], "the reference script", "a machine")
    [ax] = fig.axes
    assert [t.get_text() for t in ax.texts] == ["elsewhere", "reference script", "default", "fast"]
    assert len(ax.containers) == 3 and ax.get_xscale() == "log"  # an error bar per row
    save_figure(fig, tmp_path / "frontier.png")
    assert imread(tmp_path / "frontier.png")[..., :3].std() > 0.05
