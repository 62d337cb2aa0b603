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
from dataclasses import dataclass

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


def mean_iou(
    references: Sequence[Sequence[Sequence[float]]], predictions: Sequence[Sequence[Sequence[float]]]
) -> float:
    """Mean of `item_iou` over items (each item a list of boxes on each side)."""
    _check_pairs(references, predictions)
    return float(np.mean([item_iou(r, p) for r, p in zip(references, predictions)])) if references else math.nan


# ---------------------------------------------------------------- detection: COCO AP


@dataclass
class ImageMatches:
    """COCO matching of one class in one image, at every IoU threshold; AP over images is computed from these.

    Matching only looks inside one image, so these can be computed once and pooled in any resample of images.
    """

    scores: np.ndarray  # (detections,) in score order, at most COCO_MAX_DETECTIONS
    hits: np.ndarray  # (thresholds, detections) bool: detection matched a reference at that IoU threshold
    n_refs: int


def match_detections(
    references: Sequence[Sequence[float]],
    detections: Sequence[tuple[Sequence[float], float]],
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
) -> ImageMatches:
    """Match (box, score) detections to reference boxes of one image, as COCO does, at each threshold."""
    dets = sorted(detections, key=lambda d: -d[1])[:COCO_MAX_DETECTIONS]  # sorted() is stable, like mergesort
    boxes = [box for box, _ in dets]
    hits = np.array([_greedy_hits(references, boxes, t) for t in iou_thresholds], dtype=bool)
    scores = np.array([float(score) for _, score in dets], dtype=float)
    return ImageMatches(scores, hits.reshape(len(iou_thresholds), len(dets)), len(references))


def ap_from_matches(matches: Sequence[ImageMatches], threshold_index: int = 0) -> float:
    """COCO AP (101-point) pooled over images; NaN when there is no reference box at all."""
    return float(ap_per_threshold(matches)[threshold_index])


def ap_per_threshold(matches: Sequence[ImageMatches]) -> np.ndarray:
    """COCO AP at every threshold the matches were made at, in one vectorised pass over the pooled detections."""
    n_thresholds = matches[0].hits.shape[0] if matches else 1
    n_refs = sum(m.n_refs for m in matches)
    if n_refs == 0:
        return np.full(n_thresholds, math.nan)
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    if len(scores) == 0:
        return np.zeros(n_thresholds)
    hits = np.concatenate([m.hits for m in matches], axis=1)[:, np.argsort(-scores, kind="mergesort")]
    tp, fp = np.cumsum(hits, axis=1), np.cumsum(~hits, axis=1)
    recall = tp / n_refs
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # envelope: best at any higher recall
    out = np.empty(n_thresholds)
    for t in range(n_thresholds):
        at = np.searchsorted(recall[t], COCO_RECALL_POINTS, side="left")
        out[t] = np.where(at < hits.shape[1], precision[t, np.minimum(at, hits.shape[1] - 1)], 0.0).mean()
    return out


def average_precision(
    references: Sequence[Sequence[Sequence[float]]],
    detections: Sequence[Sequence[tuple[Sequence[float], float]]],
    iou_threshold: float = 0.5,
) -> float:
    """COCO AP of one class: per image a list of reference boxes and a list of (box, score) detections."""
    _check_pairs(references, detections)
    return ap_from_matches([match_detections(r, d, (iou_threshold,)) for r, d in zip(references, detections)])


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


def map_from_matches(labels: Sequence[str], matches: Sequence[ImageMatches]) -> dict[str, float]:
    """mAP@0.5 and mAP@0.5:0.95 over classes from per-(image, class) matches; `labels[i]` is the class of i.

    The matches must be made at COCO_IOU_THRESHOLDS (index 0 is 0.5).
    """
    by_label: dict[str, list[ImageMatches]] = {}
    for label, match in zip(labels, matches):
        by_label.setdefault(label, []).append(match)
    per_label = {}
    for label, group in sorted(by_label.items()):
        aps = ap_per_threshold(group)
        if not math.isnan(aps[0]):
            per_label[label] = {"ap50": float(aps[0]), "ap50_95": float(aps.mean())}
    return {
        "map50": _mean([v["ap50"] for v in per_label.values()]),
        "map50_95": _mean([v["ap50_95"] for v in per_label.values()]),
        "per_label": per_label,
    }


def detection_map(
    references: Sequence[Sequence[Mapping]], detections: Sequence[Sequence[Mapping]]
) -> dict[str, object]:
    """COCO mAP over classes. Per image: reference [{label, xyxy}], detections [{label, xyxy, score}].

    A detection without a score counts as score 1. Returns {"map50", "map50_95", "per_label": {label: {"ap50",
    "ap50_95"}}}; "map50_95" averages AP over COCO's IoU thresholds 0.50:0.05:0.95. Classes with no reference
    box are left out.
    """
    _check_pairs(references, detections)
    classes = sorted({box["label"] for boxes in references for box in boxes})
    labels, matches = [], []
    for label in classes:
        for refs, dets in zip(references, detections):
            ref_boxes = [b["xyxy"] for b in refs if b["label"] == label]
            det_boxes = [
                (d["xyxy"], 1.0 if d.get("score") is None else d["score"]) for d in dets if d["label"] == label
            ]
            labels.append(label)
            matches.append(match_detections(ref_boxes, det_boxes))
    return map_from_matches(labels, matches)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _check_pairs(references: Sequence, predictions: Sequence) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference items but {len(predictions)} predicted: they must pair up")
