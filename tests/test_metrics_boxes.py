"""Box metrics: hand-computed IoU, matching and AP; pycocotools as the mAP reference."""

import math

import numpy as np
import pytest

from cxrlm.metrics import boxes as B


def test_iou_hand_computed():
    assert B.iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert B.iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert B.iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert B.iou([0, 0, 0, 5], [0, 0, 0, 5]) == 0.0  # zero area: no division by zero
    assert B.iou_matrix([], [[0, 0, 1, 1]]).shape == (0, 1)


def test_hungarian_beats_greedy():
    refs = [[0, 0, 10, 10], [8, 0, 18, 10]]
    preds = [[5, 0, 15, 10], [0, 0, 9, 10]]
    # greedy on the first prediction would take ref 0 or 1 at IoU 1/3; the optimum pairs pred 1 with ref 0
    ious = sorted(B.matched_ious(refs, preds))
    assert ious == pytest.approx(sorted([0.9, B.iou(refs[1], preds[0])]))


def test_item_iou_and_soft_f1_count_unmatched_boxes():
    ref = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert B.item_iou(ref, [[0, 0, 10, 10]]) == 0.5
    assert B.item_iou([], []) == 1.0 and B.item_iou(ref, []) == 0.0 and B.item_iou([], ref) == 0.0
    f1 = B.soft_f1(ref, [[0, 0, 10, 10], [0, 0, 5, 10], [50, 50, 60, 60]])
    assert f1 == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 2 / 5})
    assert B.mean_iou([ref, []], [[[0, 0, 10, 10]], []]) == 0.75


def test_average_precision_hand_computed():
    refs = [[[0, 0, 10, 10], [20, 20, 30, 30]]]
    dets = [[([0, 0, 10, 10], 0.9), ([50, 50, 60, 60], 0.8), ([20, 20, 30, 30], 0.7)]]
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; envelope 1, 2/3, 2/3; 51 recall points <= 0.5 read 1,
    # the 50 above read 2/3
    assert B.average_precision(refs, dets) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_average_precision_edge_cases():
    assert math.isnan(B.average_precision([[]], [[([0, 0, 1, 1], 0.5)]]))  # no reference: undefined
    assert B.average_precision([[[0, 0, 1, 1]]], [[]]) == 0.0  # nothing detected
    # a duplicate detection of the same box is a false positive
    ap = B.average_precision([[[0, 0, 10, 10]]], [[([0, 0, 10, 10], 0.9), ([0, 0, 10, 10], 0.8)]])
    assert ap == pytest.approx(1.0)  # the false positive comes after full recall, so it does not lower AP


def test_detection_map_per_label_and_default_score():
    refs = [[{"label": "Nodule", "xyxy": [0, 0, 10, 10]}, {"label": "Mass", "xyxy": [20, 20, 40, 40]}]]
    dets = [[{"label": "Nodule", "xyxy": [0, 0, 10, 10]}, {"label": "Mass", "xyxy": [20, 20, 30, 30], "score": 0.5}]]
    out = B.detection_map(refs, dets)
    assert out["per_label"]["Nodule"] == pytest.approx({"ap50": 1.0, "ap50_95": 1.0})
    assert out["per_label"]["Mass"]["ap50"] == 0.0  # IoU 0.25
    assert out["map50"] == pytest.approx(0.5)


def _random_detection_case(rng, n_images=6):
    labels = ["Mass", "Nodule"]
    refs, dets = [], []
    for _ in range(n_images):
        image_refs, image_dets = [], []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 80, 2)
            box = [x, y, x + rng.uniform(5, 20), y + rng.uniform(5, 20)]
            image_refs.append({"label": str(rng.choice(labels)), "xyxy": box})
            if rng.random() < 0.8:  # a jittered detection of it
                jitter = rng.normal(0, 3, 4)
                image_dets.append(
                    {
                        "label": image_refs[-1]["label"],
                        "xyxy": list(np.array(box) + jitter),
                        "score": float(rng.random()),
                    }
                )
        for _ in range(rng.integers(0, 3)):  # false positives
            x, y = rng.uniform(0, 80, 2)
            image_dets.append(
                {"label": str(rng.choice(labels)), "xyxy": [x, y, x + 10, y + 10], "score": float(rng.random())}
            )
        refs.append(image_refs)
        dets.append(image_dets)
    return refs, dets


def _pycocotools_map(refs, dets):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted({b["label"] for boxes in refs for b in boxes})
    cat = {name: i + 1 for i, name in enumerate(labels)}
    images, annotations, results = [], [], []
    for image_id, (image_refs, image_dets) in enumerate(zip(refs, dets), start=1):
        images.append({"id": image_id, "width": 200, "height": 200})
        for b in image_refs:
            x1, y1, x2, y2 = b["xyxy"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat[b["label"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for d in image_dets:
            if d["label"] not in cat:
                continue
            x1, y1, x2, y2 = d["xyxy"]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat[d["label"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": d["score"],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in cat.items()],
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[1], evaluator.stats[0]  # AP@0.5, AP@0.5:0.95 (area "all", 100 detections)


@pytest.mark.parametrize("seed", range(4))
def test_map_matches_pycocotools(seed):
    pytest.importorskip("pycocotools")
    refs, dets = _random_detection_case(np.random.default_rng(seed))
    if not any(refs) or not any(dets):
        pytest.skip("degenerate random case")
    ours = B.detection_map(refs, dets)
    map50, map50_95 = _pycocotools_map(refs, dets)
    assert ours["map50"] == pytest.approx(map50, abs=1e-9)
    assert ours["map50_95"] == pytest.approx(map50_95, abs=1e-9)
