"""Hannover Medical School COVID-19 radiographs (shared/data/hannover-covid): `metadata.csv` with
image, patient_id, sex, view, modality (CR/DX), finding (all COVID-19), width, height.

Every patient was COVID-19 positive; as for the COVID-19 image collection, the diagnosis sets the
CheXpert Pneumonia label (a diagnosis, not a read of this particular image).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord
from cxrlm.data.sources.common import existing_image, read_csv, require_file, text, view_position
from cxrlm.data.sources.covid_chestxray import chexpert_labels


def records(root: Path) -> Iterator[ManifestRecord]:
    rows = read_csv(require_file(root, "metadata.csv"), ("image", "patient_id", "view", "finding"))
    for row in rows:
        found = existing_image(root, row["image"])
        if found is None:
            continue
        image, (width, height) = found
        yield ManifestRecord(
            dataset="hannover-covid",
            study_id=Path(image).stem,
            patient_id=row["patient_id"],
            image=image,
            view_position=view_position(row["view"]),
            labels=chexpert_labels(row["finding"]),
            source_labels={"finding": row["finding"]},
            width=width,
            height=height,
            extra={"sex": text(row.get("sex")), "modality": text(row.get("modality")),
                   "source_image_id": Path(image).stem},
        )
