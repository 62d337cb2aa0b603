"""The registry of dataset adapters, as data: name -> records reader, license, citation, patient-id namespace.

Each adapter module has `records(root: Path) -> Iterator[ManifestRecord]` that reads one published
layout and nothing else. `collection` names whose patient ids a source uses: sources sharing one
(nih14, nih14-64px) put a patient in the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cxrlm.data.sources import (
    chest_imagenome,
    chexpert,
    chexpert_plus,
    covid_chestxray,
    hannover_covid,
    iu_xray_reports,
    mimic_cxr,
    ms_cxr,
    nih14,
    nih14_64px,
    padchest_gr,
    vindr_cxr,
)
from cxrlm.errors import InputError

PHYSIONET = "PhysioNet Credentialed Health Data License 1.5.0 (credentialed access; no redistribution)"


@dataclass(frozen=True)
class Source:
    name: str
    records: Callable[[Path], Iterator]
    collection: str
    license: str
    citation: str
    description: str


SOURCES = {
    source.name: source
    for source in (
        Source(
            "nih14", nih14.records, "nih-chestxray14",
            "NIH Clinical Center: no restrictions on use; acknowledge the NIH Clinical Center",
            "Wang et al., ChestX-ray8, CVPR 2017",
            "NIH ChestX-ray14 frontal images: labels.csv (14 NIH labels) + boxes.csv; also fixtures/nih14",
        ),
        Source(
            "nih14-64px", nih14_64px.records, "nih-chestxray14",
            "NIH Clinical Center: no restrictions on use; acknowledge the NIH Clinical Center",
            "Wang et al., ChestX-ray8, CVPR 2017",
            "NIH ChestX-ray14 at 64x64 with a normal/abnormal column (smoke tests only)",
        ),
        Source(
            "covid-chestxray", covid_chestxray.records, "covid-chestxray",
            "per image (`license` field): mostly CC BY-NC-SA, some CC BY, some unknown; research use only",
            "Cohen et al., COVID-19 Image Data Collection, arXiv:2006.11988; Brixia: Signoroni et al., 2021",
            "COVID-19 image collection: diagnosis, view, severity and Brixia scores, right/left lung boxes",
        ),
        Source(
            "hannover-covid", hannover_covid.records, "hannover-covid",
            "CC BY 3.0",
            "Winther et al., COVID-19 Image Repository, Hannover Medical School, doi:10.6084/m9.figshare.12275009",
            "COVID-19 positive radiographs (CR/DX, AP/PA) from Hannover Medical School",
        ),
        Source(
            "iu-xray-reports", iu_xray_reports.records, "iu-xray",
            "reports: CC BY-NC-ND 4.0 (Open-i, Indiana University); gold labels: NCBI public domain",
            "Demner-Fushman et al., JAMIA 2016; Peng et al., NegBio, AMIA 2018",
            "Indiana University reports with hand-checked NIH-14 labels; text only (image: null)",
        ),
        Source(
            "mimic-cxr", mimic_cxr.records, "mimic",
            PHYSIONET,
            "Johnson et al., MIMIC-CXR-JPG, arXiv:1901.07042 (PhysioNet 2019)",
            "MIMIC-CXR-JPG 2.0.0: CheXpert labels per study, view, official split, FINDINGS/IMPRESSION reports",
        ),
        Source(
            "chexpert", chexpert.records, "chexpert",
            "Stanford CheXpert Dataset Research Use Agreement (non-commercial)",
            "Irvin et al., CheXpert, AAAI 2019",
            "CheXpert 1.0 train.csv/valid.csv with 14 labels (-1 uncertain)",
        ),
        Source(
            "chexpert-plus", chexpert_plus.records, "chexpert",
            "Stanford AIMI CheXpert Plus Research Use Agreement (non-commercial)",
            "Chambon et al., CheXpert Plus, arXiv:2405.19538",
            "CheXpert Plus report sections (df_chexpert_plus_*.csv) and CheXbert labels",
        ),
        Source(
            "vindr-cxr", vindr_cxr.records, "vindr-cxr",
            PHYSIONET,
            "Nguyen et al., VinDr-CXR, Scientific Data 2022",
            "VinDr-CXR DICOMs with boxes from several readers (fused) and image-level labels",
        ),
        Source(
            "chest-imagenome", chest_imagenome.records, "mimic",
            PHYSIONET,
            "Wu et al., Chest ImaGenome, PhysioNet 2021",
            "Chest ImaGenome scene graphs: anatomy boxes and region findings on MIMIC-CXR images",
        ),
        Source(
            "ms-cxr", ms_cxr.records, "mimic",
            PHYSIONET,
            "Boecking et al., Making the Most of Text Semantics..., ECCV 2022 (MS-CXR)",
            "MS-CXR phrase grounding boxes on MIMIC-CXR images",
        ),
        Source(
            "padchest-gr", padchest_gr.records, "padchest",
            "BIMCV PadChest-GR research use agreement (non-commercial)",
            "Castro et al., PadChest-GR, arXiv:2411.05085",
            "PadChest-GR grounded reports: report sentences with boxes",
        ),
    )
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise InputError(f"unknown data source {name!r}; choose one of: {', '.join(SOURCES)} (`cxrlm data sources`)")
    return SOURCES[name]


def build_records(
    name: str,
    root: str | Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    official_split: bool = False,
) -> Iterator:
    """Records of one source with `root`, `license` and a per-patient `split` filled in.

    The split is a seeded hash of (collection, patient id). With `official_split`, a record whose
    source publishes a split (MIMIC-CXR, CheXpert, PadChest-GR...) keeps it; the rest are hashed.
    Bad names, roots and fractions raise here, before any record is read.
    """
    from cxrlm.data.split import check_fractions

    source = get_source(name)
    check_fractions(val_fraction, test_fraction)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"--root {root} is not a folder; pass the top folder of the {name} data")
    return _finished(source, root.resolve(), seed, val_fraction, test_fraction, official_split)


def _finished(source: Source, root: Path, seed, val_fraction, test_fraction, official_split) -> Iterator:
    from cxrlm.data.split import assign_split

    for record in source.records(root):
        if record.image is not None:
            record.root = str(root)
        record.license = record.license or source.license
        record.boxes = inside_image(record)
        official = record.extra.get("source_split") if official_split else None
        record.split = official or assign_split(
            f"{source.collection}:{record.patient_id}", seed, val_fraction, test_fraction
        )
        yield record


def inside_image(record) -> list[dict]:
    """Boxes clipped to the stored image (annotators' corners stray a pixel or so); empty ones dropped."""
    if record.size is None:
        return record.boxes
    from cxrlm.data.sources.common import clip_xyxy

    kept = []
    for box in record.boxes:
        x1, y1, x2, y2 = (round(v, 1) for v in clip_xyxy(box["xyxy"], record.size))
        if x2 > x1 and y2 > y1:
            kept.append({**box, "xyxy": [x1, y1, x2, y2]})
    return kept
