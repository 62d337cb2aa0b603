"""How well probabilities match frequencies: expected calibration error (ECE), Brier score, reliability bins.

Conventions as in cxrlm.metrics.labels: truth 1 is positive, 0 negative; None, NaN or -1 mean "not labelled" and
that item is skipped for that label. ECE uses `N_BINS` equal-width bins over [0, 1] (the last bin holds 1.0):
ECE = sum over bins of (items in bin / items) * |fraction positive - mean probability| (Naeini et al. 2015;
Guo et al. 2017). Empty bins add nothing. Brier = mean (probability - truth)^2, as scikit-learn's
`brier_score_loss`. Both are 0 for a perfect forecaster; lower is better.
"""

from __future__ import annotations

import math

import numpy as np

from cxrlm.metrics.labels import labelled_pairs

N_BINS = 10


def _bins(probability: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index 0..n_bins-1 of each probability; 1.0 falls in the last bin."""
    return np.clip((probability * n_bins).astype(int), 0, n_bins - 1)


def reliability_bins(y_true, y_prob, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per bin: item count, mean probability and fraction positive (NaN where the bin is empty)."""
    positive, prob = labelled_pairs(y_true, y_prob)
    index = _bins(prob, n_bins)
    count = np.bincount(index, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=prob, minlength=n_bins) / count
        frequency = np.bincount(index, weights=positive.astype(float), minlength=n_bins) / count
    return {"count": count, "confidence": confidence, "frequency": frequency}


def ece(y_true, y_prob, n_bins: int = N_BINS) -> float:
    """Expected calibration error over the labelled items; NaN when there are none."""
    bins = reliability_bins(y_true, y_prob, n_bins)
    total = bins["count"].sum()
    if total == 0:
        return math.nan
    filled = bins["count"] > 0
    gaps = np.abs(bins["frequency"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] / total * gaps))


def brier(y_true, y_prob) -> float:
    """Mean squared difference between probability and truth over the labelled items; NaN when there are none."""
    positive, prob = labelled_pairs(y_true, y_prob)
    return float(np.mean((prob - positive) ** 2)) if len(prob) else math.nan


def macro_ece(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = N_BINS) -> float:
    """Mean ECE over the columns of two (items, labels) matrices, skipping labels with no labelled item."""
    return _nanmean([ece(y_true[:, j], y_prob[:, j], n_bins) for j in range(y_true.shape[1])])


def macro_brier(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    return _nanmean([brier(y_true[:, j], y_prob[:, j]) for j in range(y_true.shape[1])])


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
