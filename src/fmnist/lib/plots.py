"""Figures of test predictions. Each function returns a matplotlib Figure; the caller saves it."""

import math

import matplotlib

matplotlib.use("Agg")  # files only, no display; set before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from fmnist.lib.dataset import CLASS_NAMES

CORRECT_COLOR, WRONG_COLOR = "#1a7f37", "#cf222e"


def prediction_grid(images: np.ndarray, true: np.ndarray, probabilities: np.ndarray, title: str) -> Figure:
    """A grid of images (N, 28, 28, 1) uint8, each titled `predicted (confidence)` and `true: ...`.

    Green titles are right, red ones wrong.
    """
    columns = min(max(len(images), 1), 8)  # one empty cell when there is nothing to show
    rows = max(math.ceil(len(images) / columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows + 0.5), squeeze=False)
    predicted = probabilities.argmax(axis=1)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t, p, probs in zip(axes.flat, images, true, predicted, probabilities, strict=False):
        ax.imshow(image[..., 0], cmap="gray_r", vmin=0, vmax=255)
        color = CORRECT_COLOR if t == p else WRONG_COLOR
        ax.set_title(f"{CLASS_NAMES[p]} ({probs[p]:.0%})\ntrue: {CLASS_NAMES[t]}", fontsize=7, color=color)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def confused_pairs_chart(pairs: list[tuple[int, int, int]], support: np.ndarray, title: str) -> Figure:
    """Horizontal bars: for each (true, predicted, count), how many test images of `true` went to `predicted`."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(pairs), 1) + 1.2))
    labels = [f"{CLASS_NAMES[t]} → {CLASS_NAMES[p]}" for t, p, _ in pairs]
    counts = [n for _, _, n in pairs]
    bars = ax.barh(range(len(pairs)), counts, color=WRONG_COLOR)
    ax.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax.invert_yaxis()  # largest first, at the top
    for bar, (t, _, n) in zip(bars, pairs, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {n} ({n / support[t]:.1%} of {CLASS_NAMES[t]})",
            va="center",
            fontsize=7,
        )
    ax.set_xlabel("misclassified test images (true → predicted)")
    ax.set_xlim(0, max(counts, default=1) * 1.45)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
