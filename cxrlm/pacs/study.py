"""A PACS study in memory: its chest radiographs read through cxrlm's own DICOM path, its prior, and the SR filed back.

`read_study` lists the study's instances (QIDO-RS), retrieves its CR/DX radiographs (WADO-RS, bounded) and decodes
each with `cxrlm.io.load_image_bytes`, the path every uploaded file takes: the same size checks before decoding,
the same allow-list of non-identifying tags; nothing is written to disk. The input gate runs where the caller runs
it (`cxrlm.gate.check_study`), as for files.

For filing an SR back, each image's header is kept in memory (`PacsStudy.references`, out of the repr): its UIDs
and size, and the patient and study modules, which a PACS needs to file the SR into the same study and patient.
They go to the PACS only, never to cxrlm's outputs, logs or databases.

`find_prior` asks for the same patient's studies (PatientID, in memory only) dated before this one, keeps the
chest radiograph ones and takes the most recent; `read_prior` reads it and takes its report from a stored SR (the
newest SR in that study with text content that is not cxrlm's own preliminary output).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

from cxrlm.errors import quote
from cxrlm.limits import MAX_IMAGES, MAX_TEXT_CHARS, too_many_images
from cxrlm.pacs.client import Instance, PacsClient, PacsError, StudyInfo
from cxrlm.types import FRONTAL_VIEWS, Study

IMAGE_MODALITIES = ("CR", "DX", "DR", "RG")  # radiographs; OT secondary captures are not read from a PACS
# What an SR filed into the source study must carry of each source image: its identity and size (references), and
# the patient and study modules (filing). Never copied into cxrlm's own outputs.
FILING_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns", "Modality",
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyDescription",
)  # fmt: skip
MAX_SR_DEPTH = 16  # nesting of an SR's content tree read for text (a report is 2-3 deep)
MAX_PRIOR_SRS = 4  # SR instances of a prior study looked at for its report, newest first
CXRLM_MANUFACTURER = "cxrlm"  # cxrlm's own SRs (dicom_sr's Manufacturer): machine output, never a prior report


@dataclass
class PacsStudy:
    """A study read from a PACS: `study` is what every model call takes (images, prior, prior report)."""

    info: StudyInfo
    study: Study
    references: list = field(default_factory=list, repr=False)  # header-only pydicom Datasets, one per image
    prior: PacsStudy | None = None
    prior_report_found: bool = False

    @property
    def handle(self) -> str:
        return self.info.handle


def radiographs(instances: list[Instance]) -> list[Instance]:
    """The study's radiograph instances, frontal views first (a model's boxes refer to the first image)."""
    images = [i for i in instances if i.modality in IMAGE_MODALITIES]
    return sorted(images, key=lambda i: (i.view not in FRONTAL_VIEWS, i.order))


def read_study(client: PacsClient, study: StudyInfo | str, *, max_pixels: int = 50_000_000) -> PacsStudy:
    """Retrieve and decode the study's chest radiographs (at most MAX_IMAGES), in memory."""
    from cxrlm.io.image import drop_lateral_warning, load_image_bytes

    info = client.study(study) if isinstance(study, str) else study
    images = radiographs(client.instances(info))
    if not images:
        raise PacsError(f"study {info.handle} has no CR/DX radiograph: cxrlm reads chest X-rays")
    if refusal := too_many_images(len(images), MAX_IMAGES, "read a study of fewer views"):
        raise PacsError(f"study {info.handle}: {refusal}")
    loaded, references = [], []
    for number, instance in enumerate(images, start=1):
        dataset = client.retrieve(instance)
        references.append(_header(dataset))
        image = load_image_bytes(_part10(dataset), f"{info.handle}/{number}", max_pixels=max_pixels)
        if not image.view_position and instance.view:
            image.view_position = instance.view if instance.view in ("PA", "AP", "LL", "RL") else None
        loaded.append(image)
    drop_lateral_warning(loaded)
    return PacsStudy(info=info, study=Study(images=loaded), references=references)


def find_prior(client: PacsClient, current: StudyInfo) -> StudyInfo | None:
    """The same patient's most recent chest radiograph study before `current`, or None."""
    if not current.patient_key or not current.date:
        return None
    earlier = client.search_studies(patient_id=current.patient_key, date_to=current.date)
    earlier = [s for s in earlier if s.uid != current.uid and s.when < current.when]
    return max(earlier, key=lambda s: s.when, default=None)


def read_prior(client: PacsClient, current: PacsStudy, *, max_pixels: int = 50_000_000) -> PacsStudy | None:
    """Find, read and attach the prior (images and, from a stored SR, its report) to `current.study`."""
    info = find_prior(client, current.info)
    if info is None:
        return None
    prior = read_study(client, info, max_pixels=max_pixels)
    report = prior_report(client, info)
    current.study.prior = prior.study
    current.study.prior_report = report
    current.prior, current.prior_report_found = prior, report is not None
    return prior


def prior_report(client: PacsClient, study: StudyInfo) -> str | None:
    """The text of the newest SR in `study` that carries text and is not cxrlm's own output; None if none."""
    srs = [i for i in client.instances(study) if i.modality == "SR"]
    for instance in sorted(srs, key=lambda i: i.order, reverse=True)[:MAX_PRIOR_SRS]:
        dataset = client.retrieve(instance)
        if str(dataset.get("Manufacturer", "")).strip().lower() == CXRLM_MANUFACTURER:
            continue
        if text := sr_text(dataset):
            return text
    return None


def sr_text(dataset) -> str:
    """The TEXT content items of an SR, as 'Concept: text' lines in document order, capped at MAX_TEXT_CHARS."""
    lines: list[str] = []

    def walk(items, depth: int) -> None:
        if depth >= MAX_SR_DEPTH:
            return
        for item in items or ():
            if str(item.get("ValueType", "")) == "TEXT" and item.get("TextValue"):
                concept = item.get("ConceptNameCodeSequence")
                name = str(concept[0].get("CodeMeaning", "")) if concept else ""
                text = str(item.TextValue).strip()
                lines.append(f"{name}: {text}" if name else text)
            walk(item.get("ContentSequence"), depth + 1)

    try:
        walk(dataset.get("ContentSequence"), 0)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):  # a malformed SR: no report from it
        return ""
    return "\n".join(lines)[:MAX_TEXT_CHARS].strip()


def store_sr(client: PacsClient, study: PacsStudy, output, *, differentials_text: str | None = None,
             sop_instance_uid: str | None = None) -> str:
    """File the model's output as a preliminary Comprehensive SR (cxrlm.export.dicom_sr: PARTIAL, UNVERIFIED,
    research notice, boxes as SCOORD on the first image) into the source study with STOW-RS. Returns the SR's
    SOPInstanceUID (for the caller's own bookkeeping; cxrlm prints only its handle)."""
    from cxrlm.export.dicom_sr import to_dicom_sr

    if not study.references:
        raise PacsError(f"study {study.handle} was not read from the PACS: read it with read_study first")
    sr = to_dicom_sr(output, study=study.study, differentials_text=differentials_text, filing=study.references)
    if sop_instance_uid:  # the caller's (the watch's: fixed by study and model, so a second store is a no-op)
        sr.SOPInstanceUID = sop_instance_uid
        if "MediaStorageSOPInstanceUID" in getattr(sr, "file_meta", {}):
            sr.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    client.store([sr], study.info.uid)
    return str(sr.SOPInstanceUID)


def _header(dataset):
    """Only FILING_TAGS of a retrieved instance (no pixels), kept in memory for the SR."""
    import pydicom

    header = pydicom.Dataset()
    for keyword in FILING_TAGS:
        if keyword in dataset:
            header[keyword] = dataset[keyword]
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                    "StudyDate", "StudyTime"):
        if keyword not in header:  # highdicom reads each of these from the first evidence item
            setattr(header, keyword, "")
    return header


def _part10(dataset) -> bytes:
    """The retrieved instance as a Part 10 file in memory, for cxrlm.io's decoder."""
    import pydicom

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # pydicom's warnings may quote any attribute, patient ones included
            warnings.simplefilter("ignore")
            pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    except (ValueError, AttributeError, TypeError) as err:
        raise PacsError(f"a retrieved instance cannot be re-encoded ({quote(type(err).__name__)}): check the "
                        "PACS's copy of the study") from None
    return buffer.getvalue()
