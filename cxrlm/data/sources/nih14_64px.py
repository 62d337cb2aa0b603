"""The 64x64 NIH ChestX-ray14 smoke-test set (shared/data/nih14-64px): `labels.csv` with image,
source_split and `normal` (1 = "No Finding", 0 = any finding). Smoke tests only: too small to read.

NIH file names are <patient>_<follow-up>.png, so the patient id comes from the name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord
from cxrlm.data.sources.common import existing_image, read_csv, require_file
from cxrlm.data.sources.nih14 import chexpert_labels
from cxrlm.data.split import source_split
from cxrlm.pathologies import NIH14


def nih_labels(normal: int) -> dict[str, float]:
    """normal=1 means every NIH label is 0; normal=0 says only that one of them is 1 (which: unknown)."""
    if normal == 1:
        return {name: 0.0 for name in NIH14}
    return {}


def records(root: Path) -> Iterator[ManifestRecord]:
    for row in read_csv(require_file(root, "labels.csv"), ("image", "normal")):
        found = existing_image(root, row["image"])
        if found is None:
            continue
        image, (width, height) = found
        normal = int(float(row["normal"]))
        labels = chexpert_labels(nih_labels(normal))
        labels["No Finding"] = normal
        stem = Path(image).stem
        yield ManifestRecord(
            dataset="nih14-64px",
            study_id=stem,
            patient_id=str(int(stem.split("_")[0])),
            image=image,
            labels=labels,
            source_labels={"normal": normal},
            width=width,
            height=height,
            extra={"source_split": source_split(row.get("source_split"))},
        )
