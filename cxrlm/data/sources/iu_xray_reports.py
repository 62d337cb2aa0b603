"""Indiana University chest X-ray reports (Open-i), text only: shared/data/iu-xray-reports.

`reports_with_gold_labels.csv`: uid, MeSH, Problems, image (a description of the views, not a file),
indication, comparison, findings, impression, the 14 NIH labels and `normal`, hand-checked (the
NegBio OpenI gold standard). Records have `image: null` and `root: null`: they serve report-side
work (the report labeler, text metrics), never image tasks. `XXXX` marks de-identified words.
There are no patient ids; each report (uid) is taken as its own patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cxrlm.data.manifest import ManifestRecord
from cxrlm.data.sources.common import read_csv, require_file, text
from cxrlm.data.sources.nih14 import chexpert_labels
from cxrlm.pathologies import NIH14

CSV_NAME = "reports_with_gold_labels.csv"


def report_sections(row: dict[str, str]) -> dict[str, str | None] | None:
    report = {name: text(row.get(name)) for name in ("findings", "impression", "indication", "comparison")}
    if report["findings"] is None and report["impression"] is None:
        return None
    return report


def records(root: Path) -> Iterator[ManifestRecord]:
    rows = read_csv(require_file(root, CSV_NAME), ("uid", "findings", "impression", "normal", *NIH14))
    for row in rows:
        nih = {name: float(row[name]) for name in NIH14}
        normal = int(float(row["normal"]))
        labels = chexpert_labels(nih)
        labels["No Finding"] = normal  # `normal` is the annotators' own call; NIH-14 zeros alone are not
        yield ManifestRecord(
            dataset="iu-xray-reports",
            study_id=row["uid"],
            patient_id=row["uid"],
            labels=labels,
            source_labels={**{name: int(value) for name, value in nih.items()}, "normal": normal},
            report=report_sections(row),
            extra={"views": text(row.get("image")), "mesh": text(row.get("MeSH")), "problems": text(row.get("Problems"))},
        )
