"""Evaluation metrics, written out with numpy (the tests compare them with scikit-learn's).

Conventions: `y` holds 0/1 labels, `p` the predicted probability of 1; a row is predicted
positive when `p >= threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-15


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError("labels and scores differ in length")
    return y, p


def _both_classes(y: np.ndarray) -> bool:
    positives = int(y.sum())
    return 0 < positives < len(y)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position is in.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 … ends
    run = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[run]
    return ranks


def roc_auc(y, p) -> float:
    """Probability that a random positive scores above a random negative (ties count half): Mann-Whitney U."""
    y, p = _check(y, p)
    if not _both_classes(y):
        return float("nan")
    positives = int(y.sum())
    negatives = len(y) - positives
    rank_sum = average_ranks(p)[y == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _descending_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each distinct score (descending): the score, true positives and false positives at p >= score."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_run]
    fp = np.cumsum(1 - y_sorted)[last_of_run]
    return p_sorted[last_of_run], tp.astype(np.float64), fp.astype(np.float64)


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0)."""
    y, p = _check(y, p)
    thresholds, tp, fp = _descending_counts(y, p)
    positives, negatives = max(int(y.sum()), 1), max(len(y) - int(y.sum()), 1)
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives], np.r_[np.inf, thresholds]


def average_precision(y, p) -> float:
    """PR-AUC as average precision: sum over thresholds of (recall step) × precision."""
    y, p = _check(y, p)
    if not _both_classes(y):
        return float("nan")
    _, tp, fp = _descending_counts(y, p)
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y, p) -> float:
    y, p = _check(y, p)
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(y, p) -> float:
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2))


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 0.0

    def as_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def confusion(y, p, threshold: float) -> Confusion:
    y, p = _check(y, p)
    predicted = p >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    return Confusion(tp=tp, fp=fp, tn=len(y) - tp - fp - fn, fn=fn)


def choose_threshold(y, p, rule: str = "f1") -> float:
    """The decision threshold maximising F1 (rule "f1") or TPR - FPR (rule "youden") on (y, p).

    Candidates are the distinct scores; ties in the criterion go to the highest threshold
    (fewest positives flagged).
    """
    y, p = _check(y, p)
    thresholds, tp, fp = _descending_counts(y, p)
    positives = y.sum()
    negatives = len(y) - positives
    if rule == "f1":
        fn = positives - tp
        score = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    elif rule == "youden":
        score = tp / max(positives, 1) - fp / max(negatives, 1)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    return float(thresholds[int(np.argmax(score))])  # argmax: the first (highest) threshold among ties


def calibration_bins(y, p, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed rate in `bins` groups of equal size (by predicted probability)."""
    y, p = _check(y, p)
    order = np.argsort(p, kind="mergesort")
    out = []
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            out.append(
                {"predicted": float(p[chunk].mean()), "observed": float(y[chunk].mean()), "rows": int(len(chunk))}
            )
    return out


def evaluate(y, p, threshold: float) -> dict:
    """The metrics block of model-metadata.json (without ceiling_roc_auc)."""
    matrix = confusion(y, p, threshold)
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "precision": matrix.precision,
        "recall": matrix.recall,
        "f1": matrix.f1,
        "confusion_matrix": matrix.as_dict(),
        "positive_rate": float(np.mean(y)),
        "rows": int(len(y)),
    }
