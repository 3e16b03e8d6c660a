"""Figures of the model: its test predictions and how it learned. Each function returns a matplotlib Figure; the
caller saves it. Figures are made without pyplot, so no display backend is chosen or needed."""

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from fmnist.lib.files import CLASS_NAMES

CORRECT_COLOR, WRONG_COLOR = "#1a7f37", "#cf222e"


def prediction_grid(images: np.ndarray, true: np.ndarray, probabilities: np.ndarray, title: str) -> Figure:
    """A grid of images (N, 28, 28, 1) uint8, each titled `predicted (confidence)` and `true: ...`.

    Green titles are right, red ones wrong.
    """
    columns = min(max(len(images), 1), 8)  # one empty cell when there is nothing to show
    rows = max(math.ceil(len(images) / columns), 1)
    fig = Figure(figsize=(1.6 * columns, 1.9 * rows + 0.5))
    axes = fig.subplots(rows, columns, squeeze=False)
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
    fig = Figure(figsize=(7, 0.45 * max(len(pairs), 1) + 1.2))
    ax = fig.subplots()
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


def training_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> Figure:
    """Loss and accuracy after each epoch, side by side; `curves` is {"train" | "validation": {"loss": [...],
    "accuracy": [...]}}, one value per epoch."""
    fig = Figure(figsize=(8, 3.2))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for name, color in (("train", "#0969da"), ("validation", WRONG_COLOR)):
            values = curves[name][metric]
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, color=color, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def frontier(
    points: Sequence[tuple[str, float, float, float]], anchors: Sequence[tuple[str, float]], unit: str, title: str
) -> Figure:
    """Accuracy against time: each point (name, time in `unit`s, mean accuracy, its sd over seeds) with an error
    bar, and each anchor (name, accuracy: a figure reported elsewhere, for which no time here is known) as a dotted
    horizontal line."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for name, accuracy in anchors:
        ax.axhline(accuracy, color="#8c959f", linestyle=":", linewidth=1)
        ax.annotate(
            name,
            (1.0, accuracy),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=7,
            color="#57606a",
        )
    for name, ratio, accuracy, sd in points:
        ax.errorbar([ratio], [accuracy], yerr=[sd], fmt="o", color="#0969da", capsize=3)
        ax.annotate(name, (ratio, accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"train + evaluate time, relative to {unit} (log scale)")
    ax.set_ylabel("test accuracy (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def unsure_figure(
    reliability: Mapping[str, Sequence[Mapping[str, float]]],
    risk: Sequence[Mapping[str, float]],
    sure_share: float,
    not_garments: Sequence[tuple[str, float]],
    title: str,
) -> Figure:
    """Three panels on what the confidence means: accuracy against confidence per bin for each of `reliability`
    ({label: fmnist.lib.metrics.reliability rows}), the error among the surest answers at each coverage (`risk`:
    fmnist.lib.metrics.risk_coverage rows) with the share answered sure marked, and the share of each
    not-garment set answered unsure ((set, share) pairs)."""
    fig = Figure(figsize=(12, 3.8))
    calibration_ax, risk_ax, sets_ax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.1]})
    calibration_ax.plot([0, 1], [0, 1], color="#8c959f", linestyle=":", linewidth=1, label="confidence = accuracy")
    for (label, rows), color in zip(reliability.items(), ("#8c959f", "#0969da"), strict=False):
        confidence = [row["mean_confidence"] for row in rows]
        calibration_ax.plot(
            confidence, [row["accuracy"] for row in rows], marker="o", markersize=3, color=color, label=label
        )
    calibration_ax.set(xlabel="confidence (mean of the bin)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    calibration_ax.set_title("Confidence against accuracy", fontsize=10)
    calibration_ax.legend(fontsize=7, loc="upper left")
    risk_ax.plot([row["coverage"] for row in risk], [row["risk"] for row in risk], color="#0969da")
    risk_ax.axvline(sure_share, color=WRONG_COLOR, linestyle="--", linewidth=1)
    risk_ax.annotate(
        f" answered sure: {sure_share:.1%}",
        (sure_share, 0),
        xycoords=("data", "axes fraction"),
        xytext=(0, 6),
        textcoords="offset points",
        ha="right",
        fontsize=7,
        color=WRONG_COLOR,
    )
    risk_ax.set(xlabel="share answered (surest first)", ylabel="error among them", xlim=(0, 1))
    risk_ax.set_title("Error against coverage", fontsize=10)
    risk_ax.grid(alpha=0.3)
    names, shares = [name for name, _ in not_garments], [share for _, share in not_garments]
    sets_ax.barh(range(len(names)), shares, color=CORRECT_COLOR)
    sets_ax.set_yticks(range(len(names)), [name.replace("_", " ") for name in names], fontsize=7)
    sets_ax.invert_yaxis()
    for i, share in enumerate(shares):
        sets_ax.text(share, i, f" {share:.0%}", va="center", fontsize=7)
    sets_ax.set(xlabel="share answered unsure", xlim=(0, 1.25))
    sets_ax.set_title("Images that are not garments", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
