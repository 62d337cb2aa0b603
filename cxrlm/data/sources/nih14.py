"""NIH ChestX-ray14 as laid out in shared/data/nih14 and shared/data/fixtures/nih14.

`labels.csv`: image, patient_id, view, age, sex, width, height, finding_labels and the 14 NIH
labels as 0/1 (NLP-mined from reports). `boxes.csv` (optional): image, label, x1, y1, x2, y2 in
pixels of the stored image. The original Data_Entry_2017.csv layout is not read here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, label_value, make_box
from cxrlm.data.sources.common import existing_image, number, read_csv, require_file, view_position
from cxrlm.pathologies import NIH14, NIH_TO_CHEXPERT, canonical_name, nih_to_chexpert

# BBox_List_2017 spells one finding differently from the label list.
BOX_LABEL_FIXES = {"Infiltrate": "Infiltration"}


def nih_box_label(label: str) -> str:
    label = BOX_LABEL_FIXES.get(label, label)
    return canonical_name(label)


def chexpert_labels(nih: dict[str, float]) -> dict[str, int | None]:
    return {name: label_value(value) for name, value in nih_to_chexpert(nih).items()}


def read_boxes(root: Path) -> dict[str, list[dict]]:
    path = root / "boxes.csv"
    boxes = defaultdict(list)
    if not path.is_file():
        return boxes
    for row in read_csv(path, ("image", "label", "x1", "y1", "x2", "y2")):
        label = nih_box_label(row["label"])
        xyxy = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        boxes[row["image"]].append(make_box(label, xyxy, "finding", chexpert=NIH_TO_CHEXPERT.get(label)))
    return boxes


def records(root: Path) -> Iterator[ManifestRecord]:
    rows = read_csv(require_file(root, "labels.csv"), ("image", "patient_id", "view", *NIH14))
    boxes = read_boxes(root)
    for row in rows:
        found = existing_image(root, row["image"])
        if found is None:
            continue
        image, (width, height) = found
        nih = {name: float(row[name]) for name in NIH14}
        yield ManifestRecord(
            dataset="nih14",
            study_id=Path(image).stem,
            patient_id=row["patient_id"],
            image=image,
            view_position=view_position(row["view"]),
            labels=chexpert_labels(nih),
            source_labels={name: int(value) for name, value in nih.items()},
            boxes=boxes.get(row["image"], []),
            width=width,
            height=height,
            extra={"age": number(row.get("age")), "sex": row.get("sex") or None},
        )
