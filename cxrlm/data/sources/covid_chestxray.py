"""COVID-19 image data collection (Cohen et al., 2020) as in shared/data/covid-chestxray.

`metadata.csv` has one row per image: patientid, finding (a diagnosis such as COVID-19, other
pneumonias, ARDS, No Finding; `todo` = not yet labelled), view, sex, age, clinical outcome fields,
case-level `clinical_notes` (from publications; NOT a per-image report, so it goes to `extra`),
severity means (geographic extent, opacity) and Brixia zone scores A-F. `lung_boxes.csv` holds
right/left lung boxes drawn by annotators; `lung_mask` points to masks predicted by a model (lungVAE),
recorded in `extra` as model output, never as ground truth.

A few images appear twice (the same case entered under two patient ids); the first row wins.
About 60 images came from the Hannover collection, which `hannover-covid` also holds under other
patient ids: they are marked `extra.origin = "hannover-covid"` so they can be kept out of the
other split (see docs/DATA.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, empty_labels, make_box, normal_labels
from cxrlm.data.sources.common import existing_image, number, read_csv, require_file, text, view_position

PNEUMONIAS = (
    "COVID-19", "SARS", "Pneumocystis", "Streptococcus", "Pneumonia", "Klebsiella", "Legionella",
    "Mycoplasma Bacterial Pneumonia", "Lipoid", "Varicella", "E.Coli", "Bacterial", "Influenza",
)
# finding -> CheXpert labels it sets. Like torchxrayvision, every pneumonia diagnosis (COVID-19
# included) sets Pneumonia; ARDS requires bilateral opacities by definition, hence Lung Opacity.
FINDING_TO_CHEXPERT = {name: {"Pneumonia": 1, "No Finding": 0} for name in PNEUMONIAS}
FINDING_TO_CHEXPERT["ARDS"] = {"Lung Opacity": 1, "No Finding": 0}
FINDING_TO_CHEXPERT["COVID-19, ARDS"] = {"Pneumonia": 1, "Lung Opacity": 1, "No Finding": 0}
FINDING_TO_CHEXPERT["No Finding"] = {k: v for k, v in normal_labels().items() if v is not None}
UNLABELLED = "todo"

BRIXIA_ZONES = ("A", "B", "C", "D", "E", "F")  # A-C right lung, D-F left lung, top to bottom


def chexpert_labels(finding: str | None) -> dict[str, int | None]:
    labels = empty_labels()
    labels.update(FINDING_TO_CHEXPERT.get(finding or "", {}))
    return labels


def severity(row: dict[str, str]) -> dict:
    """Brixia zone scores (0-3 each, global 0-18) and the mean severity scores of 3 raters (0-8)."""
    out = {}
    zones = {zone: number(row.get(f"brixia_{zone}")) for zone in BRIXIA_ZONES}
    if all(value is not None for value in zones.values()):
        out["brixia"] = {zone: int(value) for zone, value in zones.items()}
        out["brixia_global"] = int(number(row.get("brixia_global")) or sum(zones.values()))
    for name in ("geographic_extent_mean", "opacity_mean"):
        value = number(row.get(name))
        if value is not None:
            out[name] = value
    return out


def read_lung_boxes(root: Path) -> dict[str, list[dict]]:
    path = root / "lung_boxes.csv"
    boxes = defaultdict(list)
    if not path.is_file():
        return boxes
    for row in read_csv(path, ("image", "label", "x1", "y1", "x2", "y2")):
        xyxy = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        boxes[row["image"]].append(make_box(row["label"].lower(), xyxy, "anatomy"))
    return boxes


def extra_fields(row: dict[str, str]) -> dict:
    view = (row.get("view") or "").strip()
    extra = {
        "finding": text(row.get("finding")),
        "age": number(row.get("age")),
        "sex": text(row.get("sex")),
        "offset_days": number(row.get("offset")),
        "supine": view.lower().endswith("supine") or None,
        "clinical_notes": text(row.get("clinical_notes")),
        "lung_mask": text(row.get("lung_mask")),
        "lung_mask_source": "lungVAE prediction (not ground truth)" if text(row.get("lung_mask")) else None,
        "doi": text(row.get("doi")),
        "url": text(row.get("url")),
        "origin": "hannover-covid" if "Hannover" in (row.get("location") or "") else None,
        "source_image_id": Path(row.get("source_filename") or "").stem or None,
    }
    extra.update(severity(row))
    return {k: v for k, v in extra.items() if v is not None}


def records(root: Path) -> Iterator[ManifestRecord]:
    rows = read_csv(require_file(root, "metadata.csv"), ("patientid", "finding", "view", "image", "license"))
    lung_boxes = read_lung_boxes(root)
    seen = set()
    for row in rows:
        if row["image"] in seen:
            continue
        seen.add(row["image"])
        found = existing_image(root, row["image"])
        if found is None:
            continue
        image, (width, height) = found
        finding = None if row["finding"] == UNLABELLED else text(row["finding"])
        yield ManifestRecord(
            dataset="covid-chestxray",
            study_id=Path(image).stem,
            patient_id=row["patientid"],
            image=image,
            view_position=view_position(row["view"]),
            labels=chexpert_labels(finding),
            source_labels={"finding": finding},
            boxes=lung_boxes.get(row["image"], []),
            width=width,
            height=height,
            license=text(row["license"]) or "unknown (see extra.url)",
            extra=extra_fields(row),
        )
