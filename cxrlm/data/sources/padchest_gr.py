"""PadChest-GR (BIMCV, 2024): grounded radiology reports - each report sentence with its boxes.

Published layout under --root:
  grounded_reports_20240819.json   [{StudyID, ImageID, findings: [{sentence_en, sentence_es, abnormal,
                                     boxes: [[x1, y1, x2, y2], ...], extra_boxes, labels, locations,
                                     progression}]}]; box corners are fractions (0-1) of the image
  master_table.csv                 one row per (study, label): StudyID, ImageID, PatientID, split, ...
  PadChest_GR/<ImageID>            the PNGs (from PadChest_GR.zip)
Sentences with abnormal = false often lack boxes and labels. The English sentences, joined, are the
record's findings (the report has no separate impression). Boxes keep their sentence as `phrase`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, empty_labels, make_box, normal_labels
from cxrlm.data.sources.common import existing_image, find_file, read_csv, read_json
from cxrlm.data.split import source_split
from cxrlm.errors import InputError
from cxrlm.pathologies import normalize_label

IMAGE_FOLDERS = ("PadChest_GR", "Padchest_GR_files/PadChest_GR", "images_grounding", ".")
# PadChest terms (Bustos et al.) with a CheXpert counterpart that plain alias matching misses.
PADCHEST_TO_CHEXPERT = {
    "alveolar pattern": "Consolidation",
    "interstitial pattern": "Lung Opacity",
    "infiltrates": "Lung Opacity",
    "ground glass pattern": "Lung Opacity",
    "laminar atelectasis": "Atelectasis",
    "lobar atelectasis": "Atelectasis",
    "costophrenic angle blunting": "Pleural Effusion",
    "pleural thickening": "Pleural Other",
    "apical pleural thickening": "Pleural Other",
    "nodule": "Lung Lesion",
    "multiple nodules": "Lung Lesion",
    "mass": "Lung Lesion",
    "pulmonary mass": "Lung Lesion",
    "rib fracture": "Fracture",
    "clavicle fracture": "Fracture",
    "vertebral fracture": "Fracture",
    "humeral fracture": "Fracture",
    "mediastinal enlargement": "Enlarged Cardiomediastinum",
    "pulmonary edema": "Edema",
    "heart insufficiency": "Edema",
    "NSG tube": "Support Devices",
    "endotracheal tube": "Support Devices",
    "central venous catheter": "Support Devices",
    "pacemaker": "Support Devices",
    "chest drain tube": "Support Devices",
    "electrical device": "Support Devices",
}


def to_chexpert(label: str) -> str | None:
    return PADCHEST_TO_CHEXPERT.get(label) or normalize_label(label, cutoff=0.92)


def pixel_xyxy(box, size: tuple[int, int], where: str) -> list[float]:
    if len(box) != 4 or any(not 0.0 <= float(v) <= 1.0 for v in box):
        raise InputError(f"{where}: box {box} is not four fractions in [0, 1]; is this the published JSON?")
    width, height = size
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1 * width, y1 * height, x2 * width, y2 * height]


def sentence_boxes(finding: dict, size: tuple[int, int], where: str) -> list[dict]:
    labels = finding.get("labels") or ["finding"]
    phrase = (finding.get("sentence_en") or "").strip() or None
    return [
        make_box(labels[0], pixel_xyxy(box, size, where), "finding", chexpert=to_chexpert(labels[0]), phrase=phrase)
        for box in (finding.get("boxes") or []) + (finding.get("extra_boxes") or [])
    ]


def study_labels(findings: list[dict]) -> tuple[dict[str, int | None], dict[str, int]]:
    """CheXpert labels and the source's own labels (1 = an abnormal sentence names it)."""
    source = {label: 1 for f in findings if f.get("abnormal") for label in f.get("labels") or []}
    if not any(f.get("abnormal") for f in findings):
        return normal_labels(), source
    labels = empty_labels()
    labels["No Finding"] = 0
    for label in source:
        if to_chexpert(label):
            labels[to_chexpert(label)] = 1
    return labels, source


def read_master(root: Path) -> dict[str, dict[str, str]]:
    path = root / "master_table.csv"
    if not path.is_file():
        return {}
    return {row["ImageID"]: row for row in read_csv(path, ("ImageID", "PatientID", "split"))}


def records(root: Path) -> Iterator[ManifestRecord]:
    json_path = find_file(root, ("grounded_reports_*.json",), "PadChest-GR grounded report file")
    master = read_master(root)
    for study in read_json(json_path):
        image_id = study["ImageID"]
        found = existing_image(root, *(str(Path(folder) / image_id) for folder in IMAGE_FOLDERS))
        if found is None:
            continue
        image, size = found
        findings = study.get("findings") or []
        where = f"{json_path.name} {image_id}"
        labels, source = study_labels(findings)
        sentences = [f["sentence_en"].strip() for f in findings if (f.get("sentence_en") or "").strip()]
        row = master.get(image_id, {})
        yield ManifestRecord(
            dataset="padchest-gr",
            study_id=str(study.get("StudyID") or row.get("StudyID") or Path(image_id).stem),
            patient_id=row.get("PatientID") or str(study.get("StudyID") or Path(image_id).stem),
            image=image,
            labels=labels,
            source_labels=source,
            boxes=[box for f in findings for box in sentence_boxes(f, size, where)],
            report={"findings": " ".join(sentences), "impression": None} if sentences else None,
            width=size[0],
            height=size[1],
            extra={"source_split": source_split(row.get("split"))},
        )
