"""Bootstrap confidence intervals over evaluation items, for any metric, and a paired test between two systems.

A metric is any function of item columns: `metric(*columns) -> float`, e.g. `metric(y_true, y_score)`.
Each resample draws items with replacement (the same indices for every column, and for both systems in the
paired test), so per-item pairing is kept. Columns may be numpy arrays (indexed fast) or lists.

Resamples on which the metric is undefined (NaN, e.g. AUROC of a resample without positives) are dropped;
`n_valid` says how many were kept. Intervals are percentile intervals (2.5th and 97.5th percentiles for 95%).
The paired p-value is two-sided and tests "no difference" by centring the bootstrap differences on zero:
p = (1 + #{|d* - d| >= |d|}) / (B + 1), with d the observed difference (Efron and Tibshirani 1993, 16.4;
Koehn 2004 for the paired use in text generation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000


@dataclass
class Interval:
    value: float
    ci_low: float
    ci_high: float
    n: int
    n_valid: int = 0

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class PairedResult:
    delta: float  # metric(A) - metric(B) on all shared items
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_valid: int = 0

    @property
    def a_better(self) -> bool:
        """A beats B when the whole 95% interval of the difference is above zero."""
        return bool(self.ci_low > 0)

    def to_dict(self) -> dict:
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        out["a_better"] = self.a_better
        return out


def resample_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) item indices drawn with replacement from a seeded generator."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_ci(
    metric: Callable[..., float],
    *columns: Sequence,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Metric value on all items and its percentile bootstrap interval."""
    n = _common_length(columns)
    value = float(metric(*columns)) if n else math.nan
    if n == 0:
        return Interval(value, math.nan, math.nan, 0)
    draws = np.array([metric(*_take(columns, idx)) for idx in resample_indices(n, n_resamples, seed)], dtype=float)
    low, high, n_valid = _percentiles(draws, confidence)
    return Interval(value, low, high, n, n_valid)


def paired_bootstrap(
    metric: Callable[..., float],
    columns_a: Sequence[Sequence],
    columns_b: Sequence[Sequence],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """Difference metric(A) - metric(B) over the same items, its interval and a two-sided p-value.

    columns_a and columns_b are tuples of columns for the metric, item i of A paired with item i of B
    (e.g. (references, hypotheses_a) and (references, hypotheses_b)).
    """
    n = _common_length(tuple(columns_a) + tuple(columns_b))
    if n == 0:
        return PairedResult(math.nan, math.nan, math.nan, math.nan, 0)
    delta = float(metric(*columns_a)) - float(metric(*columns_b))
    diffs = np.array(
        [
            float(metric(*_take(columns_a, idx))) - float(metric(*_take(columns_b, idx)))
            for idx in resample_indices(n, n_resamples, seed)
        ]
    )
    low, high, n_valid = _percentiles(diffs, confidence)
    finite = diffs[np.isfinite(diffs)]
    if not math.isfinite(delta) or len(finite) == 0:
        p_value = math.nan
    else:
        p_value = float((1 + np.sum(np.abs(finite - delta) >= abs(delta))) / (len(finite) + 1))
    return PairedResult(delta, low, high, p_value, n, n_valid)


def mean(values: Sequence[float]) -> float:
    """Mean of per-item scores, the metric for anything that averages over items (ROUGE-L, IoU, accuracy)."""
    return float(np.mean(values)) if len(values) else math.nan


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float, int]:
    finite = draws[np.isfinite(draws)]
    if len(finite) == 0:
        return math.nan, math.nan, 0
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), len(finite)


def _take(columns: Sequence[Sequence], idx: np.ndarray) -> list:
    return [col[idx] if isinstance(col, np.ndarray) else [col[i] for i in idx] for col in columns]


def _common_length(columns: Sequence[Sequence]) -> int:
    lengths = {len(col) for col in columns}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths {sorted(lengths)}: every column needs one entry per item")
    return lengths.pop() if lengths else 0
