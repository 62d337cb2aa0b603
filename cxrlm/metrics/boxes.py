"""Box metrics for grounding and detection: IoU, per-item matched IoU, soft F1, COCO-style AP and mAP.

Boxes are (x1, y1, x2, y2) in pixels of one image, continuous coordinates: area is (x2-x1)*(y2-y1), as in
pycocotools (no "+1"). AP follows COCO's evaluation (pycocotools `COCOeval`, area range "all", up to 100
detections per image): detections are matched greedily in score order to the unmatched reference box of
highest IoU at or above the threshold, precision is made monotone, and AP is the mean precision at 101 recall
points 0, 0.01, ..., 1. A class with no reference box anywhere has no AP and is left out of the mean.

Not here: phrase-to-label mapping (the runner decides which reference boxes a phrase is scored against).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

COCO_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
COCO_MAX_DETECTIONS = 100


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    return float(iou_matrix([a], [b])[0, 0])


def iou_matrix(boxes_a: Sequence[Sequence[float]], boxes_b: Sequence[Sequence[float]]) -> np.ndarray:
    """(len(a), len(b)) IoU of every pair. A degenerate box (zero area) has IoU 0 with everything."""
    a = np.asarray(boxes_a, dtype=float).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=float).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# ---------------------------------------------------------------- grounding: one item, matched


def matched_ious(references: Sequence[Sequence[float]], predictions: Sequence[Sequence[float]]) -> list[float]:
    """IoUs of the one-to-one matching (Hungarian, maximum total IoU) of predicted to reference boxes."""
    if len(references) == 0 or len(predictions) == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    ious = iou_matrix(references, predictions)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return [float(ious[r, c]) for r, c in zip(rows, cols)]


def item_iou(references: Sequence[Sequence[float]], predictions: Sequence[Sequence[float]]) -> float:
    """Matched IoU of one item: the sum of matched IoUs over max(#references, #predictions).

    Unmatched boxes on either side count as IoU 0, so extra or missing boxes cost. One box each: plain IoU.
    Both empty (nothing to find, nothing found): 1. One side empty: 0.
    """
    if len(references) == 0 and len(predictions) == 0:
        return 1.0
    return sum(matched_ious(references, predictions)) / max(len(references), len(predictions))


def soft_f1(references: Sequence[Sequence[float]], predictions: Sequence[Sequence[float]]) -> dict[str, float]:
    """Hungarian-matched soft precision, recall and F1 of one item: matched IoU mass / #predictions, / #references.

    F1 = 2 * sum(IoU) / (#predictions + #references). Both empty: 1 for all three.
    """
    if len(references) == 0 and len(predictions) == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    mass = sum(matched_ious(references, predictions))
    return {
        "precision": mass / len(predictions) if len(predictions) else 0.0,
        "recall": mass / len(references) if len(references) else 0.0,
        "f1": 2 * mass / (len(predictions) + len(references)),
    }


def mean_iou(references: Sequence[Sequence[Sequence[float]]], predictions: Sequence[Sequence[Sequence[float]]]) -> float:
    """Mean of `item_iou` over items (each item a list of boxes on each side)."""
    _check_pairs(references, predictions)
    return float(np.mean([item_iou(r, p) for r, p in zip(references, predictions)])) if references else math.nan


# ---------------------------------------------------------------- detection: COCO AP


def average_precision(
    references: Sequence[Sequence[Sequence[float]]],
    detections: Sequence[Sequence[tuple[Sequence[float], float]]],
    iou_threshold: float = 0.5,
) -> float:
    """COCO AP of one class: per image a list of reference boxes and a list of (box, score) detections."""
    _check_pairs(references, detections)
    n_refs = sum(len(r) for r in references)
    if n_refs == 0:
        return math.nan
    scores, hits = [], []
    for refs, dets in zip(references, detections):
        dets = sorted(dets, key=lambda d: -d[1])[:COCO_MAX_DETECTIONS]  # sorted() is stable, like COCO's mergesort
        scores += [float(score) for _, score in dets]
        hits += _greedy_hits(refs, [box for box, _ in dets], iou_threshold)
    if not scores:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    hits = np.asarray(hits, dtype=bool)[order]
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall = tp / n_refs
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope: best at any higher recall
    at = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
    sampled = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def _greedy_hits(refs: Sequence[Sequence[float]], boxes: Sequence[Sequence[float]], threshold: float) -> list[bool]:
    """COCO matching in one image: each detection (in score order) takes the free reference of highest IoU."""
    if not boxes:
        return []
    if len(refs) == 0:
        return [False] * len(boxes)
    ious = iou_matrix(boxes, refs)
    taken = np.zeros(len(refs), dtype=bool)
    hits = []
    for row in ious:
        best, best_iou = -1, min(threshold, 1 - 1e-10)
        for j, value in enumerate(row):
            if not taken[j] and value >= best_iou:
                best, best_iou = j, value
        if best >= 0:
            taken[best] = True
        hits.append(best >= 0)
    return hits


def detection_map(
    references: Sequence[Sequence[Mapping]],
    detections: Sequence[Sequence[Mapping]],
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
) -> dict[str, object]:
    """COCO mAP over classes. Per image: reference [{label, xyxy}], detections [{label, xyxy, score}].

    A detection without a score counts as score 1. Returns {"map50", "map50_95", "per_label": {label: {"ap50",
    "ap50_95"}}}; "map50_95" averages AP over `iou_thresholds` (COCO's 0.50:0.05:0.95).
    """
    _check_pairs(references, detections)
    labels = sorted({box["label"] for boxes in references for box in boxes})
    per_label = {}
    for label in labels:
        refs = [[b["xyxy"] for b in boxes if b["label"] == label] for boxes in references]
        dets = [
            [(d["xyxy"], 1.0 if d.get("score") is None else d["score"]) for d in boxes if d["label"] == label]
            for boxes in detections
        ]
        aps = [average_precision(refs, dets, t) for t in iou_thresholds]
        per_label[label] = {"ap50": average_precision(refs, dets, 0.5), "ap50_95": float(np.mean(aps))}
    return {
        "map50": _mean([v["ap50"] for v in per_label.values()]),
        "map50_95": _mean([v["ap50_95"] for v in per_label.values()]),
        "per_label": per_label,
    }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _check_pairs(references: Sequence, predictions: Sequence) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference items but {len(predictions)} predicted: they must pair up")
