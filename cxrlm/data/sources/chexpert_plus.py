"""CheXpert Plus (Stanford AIMI, 2024): CheXpert images with their reports, sections split out.

Published layout under --root:
  df_chexpert_plus_240401.csv   path_to_image, frontal_lateral, ap_pa, deid_patient_id, section_findings,
                                section_impression, section_clinical_history, section_comparison, age, sex,
                                split, ... (one row per image)
  chexbert_labels/report_fixed.json   JSON lines: path_to_image and the 14 CheXbert labels (optional)
  train/patient42142/study5/view1_frontal.jpg   (PNG releases: the same path with .png)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, empty_labels, label_value
from cxrlm.data.sources.chexpert import patient_and_study
from cxrlm.data.sources.common import existing_image, find_file, number, read_csv, text, view_position
from cxrlm.data.split import source_split
from cxrlm.pathologies import CHEXPERT14

LABEL_FILE = "chexbert_labels/report_fixed.json"


def read_labels(root: Path) -> dict[str, dict[str, int | None]]:
    path = root / LABEL_FILE
    if not path.is_file():
        return {}
    labels = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                labels[row["path_to_image"]] = {name: label_value(row.get(name)) for name in CHEXPERT14}
    return labels


def png_copies(path: str) -> tuple[str, str]:
    """Where the PNG release keeps the image listed as .jpg."""
    png = Path(path).with_suffix(".png")
    return str(png), str(Path("PNG") / png)


def report(row: dict[str, str]) -> dict[str, str | None] | None:
    impression = " ".join(filter(None, (text(row.get("section_impression")), text(row.get("section_end_of_impression")))))
    sections = {
        "findings": text(row.get("section_findings")),
        "impression": impression or None,
        "indication": text(row.get("section_clinical_history")) or text(row.get("section_history")),
        "comparison": text(row.get("section_comparison")),
    }
    return sections if sections["findings"] or sections["impression"] else None


def view(row: dict[str, str]) -> str | None:
    if (row.get("frontal_lateral") or "").lower() == "lateral":
        return "LATERAL"
    return view_position(row.get("ap_pa"))


def records(root: Path) -> Iterator[ManifestRecord]:
    csv_path = find_file(root, ("df_chexpert_plus_*.csv",), "CheXpert Plus report table")
    labels = read_labels(root)
    for row in read_csv(csv_path, ("path_to_image", "section_findings", "section_impression")):
        found = existing_image(root, row["path_to_image"], *png_copies(row["path_to_image"]))
        if found is None:
            continue
        image, (width, height) = found
        patient, study = patient_and_study(row["path_to_image"])
        image_labels = labels.get(row["path_to_image"])
        yield ManifestRecord(
            dataset="chexpert-plus",
            study_id=study,
            patient_id=text(row.get("deid_patient_id")) or patient,
            image=image,
            view_position=view(row),
            labels=dict(image_labels) if image_labels else empty_labels(),
            source_labels={k: v for k, v in (image_labels or {}).items() if v is not None},
            report=report(row),
            width=width,
            height=height,
            extra={"sex": text(row.get("sex")), "age": number(row.get("age")),
                   "source_split": source_split(row.get("split"))},
        )
