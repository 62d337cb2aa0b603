"""MS-CXR (Boecking et al., 2022; PhysioNet): phrase grounding boxes on MIMIC-CXR images.

Published layout under --root:
  MS_CXR_Local_Alignment_v1.0.0.csv (or v1.1.0)   dicom_id, category_name, label_text, path, x, y, w, h,
                                                   image_width, image_height[, split]
  files/p15/p15857479/s57574085/<dicom_id>.jpg      MIMIC-CXR-JPG's files/ folder, linked or copied here
One row per box; rows sharing (dicom_id, label_text) are several boxes for one phrase. `path` names the
MIMIC-CXR DICOM; the JPEG of the same name is used when the DICOM is not there. Boxes (x, y, w, h in
pixels of an image_width x image_height image) are rescaled to the stored image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, empty_labels, make_box
from cxrlm.data.sources.common import clip_xyxy, existing_image, find_file, read_csv, scale_xyxy
from cxrlm.data.split import source_split
from cxrlm.pathologies import normalize_label

COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height")


def box(row: dict[str, str], size: tuple[int, int]) -> dict:
    x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
    xyxy = scale_xyxy([x, y, x + w, y + h], (float(row["image_width"]), float(row["image_height"])), size)
    category = row["category_name"]
    return make_box(category, clip_xyxy(xyxy, size), "finding", chexpert=normalize_label(category),
                    phrase=row["label_text"].strip())


def ids_from_path(path: str) -> tuple[str, str]:
    """(subject, study) from files/p15/p15857479/s57574085/<dicom>.dcm."""
    parts = Path(path).parts
    return parts[-3].removeprefix("p"), parts[-2].removeprefix("s")


def records(root: Path) -> Iterator[ManifestRecord]:
    csv_path = find_file(root, ("MS_CXR_Local_Alignment_v*.csv",), "MS-CXR annotation table")
    by_image = defaultdict(list)
    for row in read_csv(csv_path, COLUMNS):
        by_image[row["dicom_id"]].append(row)
    for dicom_id, rows in by_image.items():
        path = rows[0]["path"]
        found = existing_image(root, str(Path(path).with_suffix(".jpg")), path)
        if found is None:
            continue
        image, size = found
        subject, study = ids_from_path(path)
        labels = empty_labels()
        for name in {normalize_label(row["category_name"]) for row in rows} - {None}:
            labels[name] = 1
        yield ManifestRecord(
            dataset="ms-cxr",
            study_id=study,
            patient_id=subject,
            image=image,
            labels=labels,
            source_labels={row["category_name"]: 1 for row in rows},
            boxes=[box(row, size) for row in rows],
            width=size[0],
            height=size[1],
            # MS-CXR selected frontal images only; which of PA/AP is not in the table.
            extra={"dicom_id": dicom_id, "frontal": True, "source_split": source_split(rows[0].get("split"))},
        )
