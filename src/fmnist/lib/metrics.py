"""Classification metrics from labels and probabilities: pure NumPy, no framework, no files."""

import numpy as np


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(hits), where=denominator > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels; probabilities (N, C) rows sum to 1."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def summary(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Test loss, accuracy and macro-averaged precision/recall/F1."""
    predicted = probabilities.argmax(axis=1)
    scores = per_class_scores(confusion_matrix(labels, predicted, probabilities.shape[1]))
    return {
        "loss": cross_entropy(probabilities, labels),
        "accuracy": float(np.mean(predicted == labels)),
        "macro_precision": float(scores["precision"].mean()),
        "macro_recall": float(scores["recall"].mean()),
        "macro_f1": float(scores["f1"].mean()),
    }


def most_confused_pairs(matrix: np.ndarray, count: int) -> list[tuple[int, int, int]]:
    """The `count` largest off-diagonal cells as (true, predicted, images), largest first."""
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:count]
    cells = zip(*np.unravel_index(order, matrix.shape), strict=True)
    pairs = [(int(t), int(p), int(off_diagonal[t, p])) for t, p in cells]
    return [pair for pair in pairs if pair[2] > 0]


# --- Calibration and unsure answers --------------------------------------------------------------------------------

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. 2017 (arXiv 1706.04599) report the calibration error


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance of each probability row (N, C) from the one-hot label: 0 is perfect, 2 worst."""
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin with images in it: {confidence (the bin's centre), mean_confidence, accuracy,
    images}, confidence being each image's highest probability."""
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins] -> k
    rows = []
    for k in range(bins):
        inside = which == k
        if inside.any():
            rows.append(
                {
                    "confidence": (k + 0.5) / bins,
                    "mean_confidence": float(confidence[inside].mean()),
                    "accuracy": float(right[inside].mean()),
                    "images": int(inside.sum()),
                }
            )
    return rows


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the image-weighted mean gap between confidence and accuracy over the bins."""
    rows = reliability(probabilities, labels, bins)
    return float(sum(row["images"] * abs(row["accuracy"] - row["mean_confidence"]) for row in rows) / len(labels))


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """The probability that an image from `outside` scores higher than one from `inside` (ties count half): the
    area under the ROC curve of telling them apart by the score, from the rank-sum (Mann-Whitney U)."""
    from scipy.stats import rankdata  # (import cost: see fmnist.lib.stats)

    ranks = rankdata(np.concatenate([inside, outside]))  # ties share their mean rank
    outside_ranks = ranks[len(inside) :].sum()
    return float((outside_ranks - len(outside) * (len(outside) + 1) / 2) / (len(inside) * len(outside)))


def fpr_at_tpr(inside: np.ndarray, outside: np.ndarray, tpr: float = 0.95) -> float:
    """The share of `outside` images taken for inside ones (score at or below the threshold) when the threshold
    keeps `tpr` of the `inside` images: "FPR at 95% TPR" with the garments as positives."""
    return float(np.mean(outside <= np.quantile(inside, tpr, method="higher")))


def risk_coverage(scores: np.ndarray, right: np.ndarray, points: int = 100) -> list[dict[str, float]]:
    """The error among the k surest answers (lowest scores), at coverage k / N = 1/points, 2/points, ..., 1."""
    order = np.argsort(scores, kind="stable")
    errors = np.cumsum(~right[order])
    rows = []
    for step in range(1, points + 1):
        k = max(1, round(step / points * len(scores)))
        rows.append({"coverage": k / len(scores), "risk": float(errors[k - 1] / k)})
    return rows
