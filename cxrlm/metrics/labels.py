"""Multi-label classification metrics (AUROC, F1, precision, recall, sensitivity at fixed specificity) and the
project's clinical-efficacy F1 (CE-F1) of generated reports.

Conventions, as in torchxrayvision: a truth value of 1 is positive, 0 negative, and None, NaN or -1 (uncertain)
mean "not labelled": that item is skipped for that label only. F1, precision and recall follow scikit-learn
with `zero_division=0`; AUROC is the exact rank statistic (Mann-Whitney U with average ranks for ties), NaN when
a label has only one class among the labelled items. Macro AUROC skips labels where it is NaN; macro F1,
precision and recall average over the labels with at least one positive reference item (a label never positive
in the evaluation set has no defined recall; scikit-learn's macro average would count it as 0, so the score would
depend on how many labels the set happens to lack). CE-F1 below keeps scikit-learn's convention, as papers do.

CE-F1 here is the project's rule-based CE-F1, not CheXbert: both report lists are labelled with the project's
rule-based labeler (`cxrlm.data.labeler.label_reports`), only 1 counts as positive (0, -1 and blank are not),
and F1 is computed over the 14 CheXpert labels and the 5 most-reported ones (Cardiomegaly, Edema,
Consolidation, Atelectasis, Pleural Effusion). Its numbers are not comparable with CheXbert-based CE-F1 in papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cxrlm.pathologies import CHEXPERT14

CE_TOP5 = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")


def label_matrix(rows: Sequence[Mapping[str, object]], labels: Sequence[str]) -> np.ndarray:
    """(items, labels) float matrix from per-item dicts: 1.0, 0.0 or NaN (missing, None, NaN or -1)."""
    out = np.full((len(rows), len(labels)), np.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(labels):
            value = row.get(name) if row else None
            if value is None or (isinstance(value, float) and math.isnan(value)) or value == -1:
                continue
            out[i, j] = float(value)
    return out


# ---------------------------------------------------------------- one label


def labelled_pairs(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true, dtype=float), np.asarray(y_score, dtype=float)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_score {y_score.shape}")
    keep = ~np.isnan(y_true) & (y_true != -1) & ~np.isnan(y_score)
    return y_true[keep] == 1, y_score[keep]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def auroc(y_true, y_score) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties count half."""
    positive, score = labelled_pairs(y_true, y_score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, from (0, 0) at threshold +inf; empty when undefined."""
    positive, score = labelled_pairs(y_true, y_score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.array([]), np.array([]), np.array([])
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tps = np.cumsum(positive)[last_of_each]
    fps = last_of_each + 1 - tps
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, score[last_of_each]]


def sensitivity_at_specificity(y_true, y_score, specificity: float = 0.9) -> float:
    """Best sensitivity at a threshold whose specificity is at least `specificity`, read off the ROC curve.

    The threshold is picked on the same data, as usual for this summary: it is an operating point, not a
    validated threshold.
    """
    fpr, tpr, _ = roc_curve(y_true, y_score)
    if len(fpr) == 0:
        return math.nan
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


def confusion_counts(y_true, y_pred) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) over labelled items; y_pred is 0/1 (or bool)."""
    positive, predicted = labelled_pairs(y_true, y_pred)
    predicted = predicted == 1
    tp = int((positive & predicted).sum())
    fp = int((~positive & predicted).sum())
    fn = int((positive & ~predicted).sum())
    return tp, fp, fn, len(positive) - tp - fp - fn


def precision_recall_f1(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# ---------------------------------------------------------------- many labels


def column_counts(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(4, labels) counts tp, fp, fn, tn per column over the labelled items. Vectorised for the bootstrap."""
    y_true, y_score = np.asarray(y_true, dtype=float), np.asarray(y_score, dtype=float)
    known = ~np.isnan(y_true) & (y_true != -1) & ~np.isnan(y_score)
    positive = known & (y_true == 1)
    negative = known & (y_true != 1)
    predicted = y_score >= threshold
    return np.stack(
        [
            (positive & predicted).sum(axis=0),
            (negative & predicted).sum(axis=0),
            (positive & ~predicted).sum(axis=0),
            (negative & ~predicted).sum(axis=0),
        ]
    )


def classification_metrics(
    y_true, y_score, labels: Sequence[str] = CHEXPERT14, threshold: float = 0.5, specificity: float = 0.9
) -> dict[str, object]:
    """Per-label and averaged metrics. y_true/y_score: per-item dicts (label -> value) or (items, labels) arrays.

    A label is predicted positive when its score >= threshold. A label with no labelled item has NaN for every
    metric and is left out of macro averages. Returns {"per_label": {label: {...}}, "macro_auroc",
    "micro_auroc", "macro_f1", "micro_f1", "macro_precision", ... "n_items"}.
    """
    truth = _as_matrix(y_true, labels)
    score = _as_matrix(y_score, labels)
    if truth.shape != score.shape:
        raise ValueError(f"{truth.shape[0]} truth rows but {score.shape[0]} score rows: they must pair up")
    counts = column_counts(truth, score, threshold)
    per_label = {}
    for j, name in enumerate(labels):
        tp, fp, fn, tn = (int(c) for c in counts[:, j])
        n = tp + fp + fn + tn
        scores = precision_recall_f1(tp, fp, fn)
        if tp + fn == 0:  # never positive here: recall and F1 are undefined (precision is, if anything was predicted)
            scores.update(recall=math.nan, f1=math.nan, precision=scores["precision"] if tp + fp else math.nan)
        per_label[name] = {
            "auroc": auroc(truth[:, j], score[:, j]),
            f"sensitivity_at_{_pct(specificity)}_specificity": sensitivity_at_specificity(
                truth[:, j], score[:, j], specificity
            ),
            **scores,
            "n": n,
            "n_positive": tp + fn,
        }
    out: dict[str, object] = {"per_label": per_label, "n_items": int(truth.shape[0])}
    out["macro_auroc"] = _nanmean([m["auroc"] for m in per_label.values()])
    with_positives = [m for m in per_label.values() if m["n_positive"]]
    for key in ("f1", "precision", "recall"):
        out[f"macro_{key}"] = _nanmean([m[key] for m in with_positives])
    out.update({f"micro_{k}": v for k, v in precision_recall_f1(*(int(c) for c in counts[:3].sum(axis=1))).items()})
    out["micro_auroc"] = auroc(truth.ravel(), score.ravel())
    return out


def macro_auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean AUROC over the columns of two (items, labels) matrices, skipping undefined labels."""
    return _nanmean([auroc(y_true[:, j], y_score[:, j]) for j in range(y_true.shape[1])])


def first_component_share(y_score: np.ndarray) -> float:
    """Share of the label scores' variance in their first principal component (log-odds, each label standardised).

    Near 1 when a classifier gives each image one number and every label follows it: a yes/no VLM can rank images
    by how abnormal they look and answer each label from that, which earns a macro AUROC above 0.5 on co-occurring
    labels without telling the labels apart. Labels with constant or missing scores are left out.
    """
    p = np.clip(y_score, 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    logit = logit[:, ~np.isnan(logit).any(axis=0)]
    logit = logit[:, logit.std(axis=0) > 1e-9]
    if logit.shape[1] < 2 or len(logit) < 3:
        return math.nan
    variances = np.linalg.svd((logit - logit.mean(0)) / logit.std(0), compute_uv=False) ** 2
    return float(variances[0] / variances.sum())


def macro_f1(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Mean F1 over the labels with at least one positive reference item (others have no defined recall)."""
    tp, fp, fn, _ = column_counts(y_true, y_score, threshold)
    scored = (tp + fn) > 0
    if not scored.any():
        return math.nan
    return float(np.mean(2 * tp[scored] / (2 * tp + fp + fn)[scored]))


def micro_f1(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of the pooled (item, label) decisions of two (items, labels) matrices."""
    tp, fp, fn, _ = column_counts(y_true, y_score, threshold).sum(axis=1)
    return precision_recall_f1(int(tp), int(fp), int(fn))["f1"]


# ---------------------------------------------------------------- clinical efficacy of report text


def ce_f1(
    references: Sequence[str],
    hypotheses: Sequence[str],
    labeler: Callable[[list[str]], list[dict]] | None = None,
) -> dict[str, float]:
    """The project's rule-based CE-F1 (not CheXbert): label both report lists, compare the positive findings.

    `labeler` defaults to `cxrlm.data.labeler.label_reports` (CheXpert-14 vocabulary); pass another callable
    with the same contract (texts -> list of {label: 1|0|-1|None}) to swap it.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses: they must pair up")
    if labeler is None:
        from cxrlm.data.labeler import label_reports

        def labeler(texts):
            return label_reports(texts, vocab="chexpert14")

    return ce_f1_from_labels(
        ce_positive_matrix(labeler(list(references))), ce_positive_matrix(labeler(list(hypotheses)))
    )


def ce_positive_matrix(rows: Sequence[Mapping[str, object]], labels: Sequence[str] = CHEXPERT14) -> np.ndarray:
    """(items, labels) 0/1 matrix: 1 only where the labeler said positive (1)."""
    return np.array([[1.0 if (row or {}).get(name) == 1 else 0.0 for name in labels] for row in rows]).reshape(
        len(rows), len(labels)
    )


def ce_f1_from_labels(reference: np.ndarray, hypothesis: np.ndarray) -> dict[str, float]:
    """CE micro/macro F1 (and micro precision/recall) over all 14 labels and over the top 5.

    Inputs are 0/1 (items, 14) matrices from `ce_positive_matrix`. Vectorised: the bootstrap calls this
    thousands of times.
    """
    reference, hypothesis = np.asarray(reference) == 1, np.asarray(hypothesis) == 1
    tp = (reference & hypothesis).sum(axis=0)
    fp = (~reference & hypothesis).sum(axis=0)
    fn = (reference & ~hypothesis).sum(axis=0)
    out = {}
    top5 = [CHEXPERT14.index(name) for name in CE_TOP5]
    for suffix, columns in (("14", slice(None)), ("5", top5)):
        micro = precision_recall_f1(int(tp[columns].sum()), int(fp[columns].sum()), int(fn[columns].sum()))
        out[f"ce_f1_micro_{suffix}"] = micro["f1"]
        out[f"ce_precision_micro_{suffix}"] = micro["precision"]
        out[f"ce_recall_micro_{suffix}"] = micro["recall"]
        denominator = 2 * tp[columns] + fp[columns] + fn[columns]
        per_label = np.divide(2 * tp[columns], denominator, out=np.zeros(len(denominator)), where=denominator > 0)
        out[f"ce_f1_macro_{suffix}"] = float(per_label.mean())
    return out


def _as_matrix(rows, labels: Sequence[str]) -> np.ndarray:
    if isinstance(rows, np.ndarray):
        return rows.astype(float)
    return label_matrix(rows, labels)


def _nanmean(values) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _pct(fraction: float) -> str:
    return f"{round(fraction * 100):d}"
