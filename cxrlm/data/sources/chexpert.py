"""CheXpert 1.0 (Stanford; full or "-small"): train.csv and valid.csv beside the train/ and valid/ folders.

Columns: Path, Sex, Age, Frontal/Lateral, AP/PA and the 14 labels (1 positive, 0 negative,
-1 uncertain, blank not mentioned). `Path` starts with the release folder's own name
("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"); --root is that folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord, label_value
from cxrlm.data.sources.common import existing_image, number, read_csv, require_file, text, view_position
from cxrlm.data.split import source_split
from cxrlm.pathologies import CHEXPERT14

CSV_FILES = ("train.csv", "valid.csv")


def relative_path(path: str) -> str:
    """Drop the leading "CheXpert-v1.0[-small]/" so the path is relative to the release folder."""
    parts = Path(path).parts
    if parts and parts[0].lower().startswith("chexpert"):
        parts = parts[1:]
    return str(Path(*parts))


def patient_and_study(path: str) -> tuple[str, str]:
    """("patient00001", "patient00001/study1") from .../patient00001/study1/view1_frontal.jpg."""
    parts = Path(path).parts
    return parts[-3], f"{parts[-3]}/{parts[-2]}"


def view(row: dict[str, str]) -> str | None:
    if (row.get("Frontal/Lateral") or "").lower() == "lateral":
        return view_position(row.get("AP/PA")) if row.get("AP/PA") in ("LL", "RL") else "LATERAL"
    return view_position(row.get("AP/PA"))


def records(root: Path) -> Iterator[ManifestRecord]:
    require_file(root, "train.csv", "(the folder holding train.csv, valid.csv, train/ and valid/)")
    for name in CSV_FILES:
        if not (root / name).is_file():
            continue
        for row in read_csv(root / name, ("Path", "Frontal/Lateral", "AP/PA", *CHEXPERT14)):
            found = existing_image(root, relative_path(row["Path"]))
            if found is None:
                continue
            image, (width, height) = found
            patient, study = patient_and_study(image)
            labels = {label: label_value(row[label]) for label in CHEXPERT14}
            age = number(row.get("Age"))
            yield ManifestRecord(
                dataset="chexpert",
                study_id=study,
                patient_id=patient,
                image=image,
                view_position=view(row),
                labels=labels,
                source_labels={k: v for k, v in labels.items() if v is not None},
                width=width,
                height=height,
                extra={"sex": text(row.get("Sex")), "age": age or None, "source_split": source_split(Path(name).stem)},
            )
