"""VinDr-CXR 1.0.0 (PhysioNet): 18,000 DICOMs read by 3 radiologists each (train) or 5 in consensus (test).

Published layout under --root:
  train/<image_id>.dicom, test/<image_id>.dicom
  annotations/annotations_{train,test}.csv     image_id, rad_id, class_name, x_min, y_min, x_max, y_max
                                               (one row per box; "No finding" rows have no coordinates)
  annotations/image_labels_{train,test}.csv    image_id, rad_id, then 0/1 per finding and impression
Several readers annotate each image, so their boxes are fused here: per image and class, boxes whose
IoU with a cluster's mean box reaches IOU_THRESHOLD join it, and the cluster becomes its mean box with
`readers` = how many different readers drew it (1 = a single reader saw it; filter downstream if needed).
Image labels become the share of readers who marked each finding (`source_labels`) and, in CheXpert
terms, 1 when at least half the readers agree, 0 when none do, -1 (uncertain) when they disagree.
No patient ids are published: each image is taken as its own patient.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, empty_labels, make_box
from cxrlm.data.sources.common import existing_image, read_csv, require_file
from cxrlm.metrics.boxes import iou
from cxrlm.pathologies import VINDR_TO_CHEXPERT

IOU_THRESHOLD = 0.4
SPLITS = ("train", "test")
NO_FINDING = "No finding"


def fuse_boxes(boxes: list[tuple[str, list[float]]], threshold: float = IOU_THRESHOLD) -> list[tuple[list[float], int]]:
    """IoU-clustered mean of (reader, xyxy) boxes of one class -> [(mean xyxy, distinct readers)], largest first."""
    clusters: list[list[tuple[str, list[float]]]] = []
    for reader, xyxy in sorted(boxes, key=lambda b: -(b[1][2] - b[1][0]) * (b[1][3] - b[1][1])):
        for cluster in clusters:
            if iou(_mean(cluster), xyxy) >= threshold:
                cluster.append((reader, xyxy))
                break
        else:
            clusters.append([(reader, xyxy)])
    return [(_mean(cluster), len({reader for reader, _ in cluster})) for cluster in clusters]


def _mean(cluster) -> list[float]:
    return [sum(xyxy[i] for _, xyxy in cluster) / len(cluster) for i in range(4)]


def read_boxes(path: Path) -> dict[str, dict[str, list[tuple[str, list[float]]]]]:
    """image_id -> class_name -> [(reader, xyxy)]; "No finding" rows carry no box and are skipped."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for row in read_csv(path, ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")):
        if row["class_name"] == NO_FINDING or not row["x_min"]:
            continue
        reader = row.get("rad_id") or row.get("rad_ID") or "consensus"
        xyxy = [float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
        out[row["image_id"]][row["class_name"]].append((reader, xyxy))
    return out


def read_votes(path: Path) -> dict[str, dict[str, float]]:
    """image_id -> finding -> share of readers who marked it (0-1)."""
    rows = read_csv(path, ("image_id",))
    findings = [c for c in rows[0] if c in VINDR_TO_CHEXPERT] if rows else []
    marks: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for finding in findings:
            marks[row["image_id"]][finding].append(float(row[finding] or 0))
    return {image: {f: round(sum(v) / len(v), 3) for f, v in votes.items()} for image, votes in marks.items()}


def chexpert_labels(votes: dict[str, float]) -> dict[str, int | None]:
    """Majority (>= half the readers) -> 1, nobody -> 0, a minority -> -1, per CheXpert label."""
    labels = empty_labels()
    by_label = defaultdict(list)
    for finding, share in votes.items():
        if VINDR_TO_CHEXPERT.get(finding):
            by_label[VINDR_TO_CHEXPERT[finding]].append(share)
    for label, shares in by_label.items():
        labels[label] = 1 if max(shares) >= 0.5 else (-1 if max(shares) > 0 else 0)
    return labels


def split_records(root: Path, split: str) -> Iterator[ManifestRecord]:
    boxes = read_boxes(root / "annotations" / f"annotations_{split}.csv")
    label_path = root / "annotations" / f"image_labels_{split}.csv"
    votes = read_votes(label_path) if label_path.is_file() else {}
    for image_id in sorted(set(boxes) | set(votes)):
        found = existing_image(root, f"{split}/{image_id}.dicom")
        if found is None:
            continue
        image, (width, height) = found
        fused = [
            make_box(name, xyxy, "finding", chexpert=VINDR_TO_CHEXPERT.get(name), readers=readers)
            for name, reader_boxes in sorted(boxes[image_id].items())
            for xyxy, readers in fuse_boxes(reader_boxes)
        ] if image_id in boxes else []
        yield ManifestRecord(
            dataset="vindr-cxr",
            study_id=image_id,
            patient_id=image_id,
            image=image,
            view_position="PA",  # the release holds posteroanterior views only
            labels=chexpert_labels(votes.get(image_id, {})),
            source_labels=votes.get(image_id, {}),
            boxes=fused,
            width=width,
            height=height,
            extra={"source_split": split},
        )


def records(root: Path) -> Iterator[ManifestRecord]:
    require_file(root, "annotations/annotations_train.csv", "(VinDr-CXR 1.0.0 from PhysioNet)")
    for split in SPLITS:
        if (root / "annotations" / f"annotations_{split}.csv").is_file():
            yield from split_records(root, split)
