"""MIMIC-CXR-JPG 2.0.0 (PhysioNet), with the MIMIC-CXR free-text reports when present.

Published layout under --root:
  mimic-cxr-2.0.0-metadata.csv[.gz]  dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
  mimic-cxr-2.0.0-chexpert.csv[.gz]  subject_id, study_id and the 14 CheXpert labels (1, 0, -1, blank)
  mimic-cxr-2.0.0-split.csv[.gz]     dicom_id, study_id, subject_id, split (train/validate/test)
  files/p10/p10000032/s50414267/<dicom_id>.jpg
  files/p10/p10000032/s50414267.txt  the report (from mimic-cxr-reports.zip), FINDINGS:/IMPRESSION: sections
Labels are per study, so every image of a study carries them. Rows whose JPEG is absent (a partial
download) are skipped with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, empty_labels, label_value
from cxrlm.data.sources.common import existing_image, find_file, read_csv, view_position
from cxrlm.data.split import source_split
from cxrlm.pathologies import CHEXPERT14

# A section header starts a line: upper-case words and a colon ("FINDINGS:", "PA AND LATERAL VIEWS:").
SECTION_HEADER = re.compile(r"^\s*([A-Z][A-Z /&()-]{2,}):", re.MULTILINE)
SECTION_NAMES = {
    "findings": ("FINDINGS",),
    "impression": ("IMPRESSION", "CONCLUSION", "IMPRESSIONS"),
    "indication": ("INDICATION", "HISTORY", "CLINICAL HISTORY", "REASON FOR EXAMINATION"),
    "comparison": ("COMPARISON", "COMPARISONS"),
}


def parse_report(text: str) -> dict[str, str | None] | None:
    """Split a MIMIC-style report into findings/impression/indication/comparison (None when absent)."""
    headers = list(SECTION_HEADER.finditer(text))
    sections = {}
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = " ".join(text[match.end() : end].split())
        sections.setdefault(match.group(1).strip(), body)
    report = {key: next((sections[n] for n in names if sections.get(n)), None) for key, names in SECTION_NAMES.items()}
    if report["findings"] is None and report["impression"] is None:
        return None
    return report


def study_dir(subject_id: str, study_id: str) -> str:
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}"


def read_labels(root: Path) -> dict[str, dict[str, int | None]]:
    path = find_file(root, ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-chexpert.csv.gz"), "CheXpert label file")
    labels = {}
    for row in read_csv(path, ("subject_id", "study_id", *CHEXPERT14)):
        labels[row["study_id"]] = {name: label_value(row[name]) for name in CHEXPERT14}
    return labels


def read_splits(root: Path) -> dict[str, str | None]:
    found = list(root.glob("mimic-cxr-2.0.0-split.csv*"))
    if not found:
        return {}
    return {row["dicom_id"]: source_split(row["split"]) for row in read_csv(found[0], ("dicom_id", "split"))}


def read_report(root: Path, subject_id: str, study_id: str) -> dict[str, str | None] | None:
    path = root / f"{study_dir(subject_id, study_id)}.txt"
    if not path.is_file():
        return None
    return parse_report(path.read_text(encoding="utf-8", errors="replace"))


def records(root: Path) -> Iterator[ManifestRecord]:
    meta = find_file(root, ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz"), "metadata file")
    rows = read_csv(meta, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    labels, splits = read_labels(root), read_splits(root)
    reports: dict[str, dict | None] = {}
    for row in rows:
        subject, study = row["subject_id"], row["study_id"]
        found = existing_image(root, f"{study_dir(subject, study)}/{row['dicom_id']}.jpg")
        if found is None:
            continue
        image, (width, height) = found
        if study not in reports:
            reports[study] = read_report(root, subject, study)
        study_labels = labels.get(study)
        yield ManifestRecord(
            dataset="mimic-cxr",
            study_id=study,
            patient_id=subject,
            image=image,
            view_position=view_position(row["ViewPosition"]),
            labels=dict(study_labels) if study_labels else empty_labels(),
            source_labels={k: v for k, v in (study_labels or {}).items() if v is not None},
            report=reports[study],
            width=width,
            height=height,
            extra={"dicom_id": row["dicom_id"], "view_raw": row["ViewPosition"] or None,
                   "source_split": splits.get(row["dicom_id"])},
        )
