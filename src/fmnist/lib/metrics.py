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
