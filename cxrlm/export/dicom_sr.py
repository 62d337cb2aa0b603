"""Export a structured report as a DICOM Comprehensive SR (TID 1500 Measurement Report) with highdicom.

Content: one planar ROI group (TID 1410, SCOORD POLYLINE closed rectangle, 5 points in image pixel coordinates)
per model box, referencing the source image, and one image-measurement group (TID 1501) per positive finding
without a box. Each group carries the finding type (a local code per CheXpert label, scheme 99CXRLM), a
qualitative evaluation (SCT Present / Uncertain) and, when the model gave one, a probability measurement.
The document is PARTIAL, UNVERIFIED and PRELIMINARY: machine output for review, never a signed report.

Privacy: the source DICOM is read only for the tags in REFERENCE_TAGS (SOP Class/Instance, Study/Series
Instance UIDs, Rows/Columns) plus Modality, and the UIDs appear only in the SR's references. The SR gets a
fresh study and an anonymous patient module (PatientID "ANON"), so no name, ID, birth date, accession number, institution or
physician of the source can leak into it. Without a DICOM source there is no image to reference, so boxes are
left out and findings are exported as qualitative evaluations only.

Filed into its source study on a PACS (`filing`: the images' headers, cxrlm.pacs.study), the SR instead takes that
study's UID and the images' patient and study modules, since a PACS files an object by them; that SR goes to the
PACS only, never to cxrlm's outputs.

The model's notice (a demonstration model says so) and the report's warnings (what was left out, and why) are TEXT
"Comment" items (DCM 121106) at the root. Not here: the narrative (findings, impression, differentials) - TID 1500
has no place for it; use the FHIR or Markdown export for that.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ComprehensiveSRStorage, generate_uid

from cxrlm.errors import ConfigError, InputError
from cxrlm.pathologies import CHEXPERT14
from cxrlm.structured import PositiveFinding, StructuredReport, as_structured, box_label
from cxrlm.types import Box, ModelOutput, Study

REFERENCE_TAGS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns")
NON_IMAGE_MODALITIES = ("SR", "SEG", "DOC", "KO", "PR", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE")
# The SR's patient and study modules: anonymous by design, never copied from the source.
ANONYMOUS_PATIENT = {
    "PatientID": "ANON",
    "PatientName": "ANONYMOUS^",  # trailing caret: a one-component person name
    "PatientBirthDate": "",
    "PatientSex": "",
    "AccessionNumber": "",
    "StudyID": "",
    "ReferringPhysicianName": "",
}
# A private coding scheme ("99" prefix, PS3.16 8.1) for CheXpert labels: no standard code covers all 13.
LABEL_SCHEME = "99CXRLM"
LABEL_CODES = {name: f"CXR{i:02d}" for i, name in enumerate(CHEXPERT14)}
SERIES_DESCRIPTION = "cxrlm AI findings - research use only, unverified"
MAX_TEXT = 1024  # characters of a TEXT item's value (UT allows more; a comment is a line, not a document)


def to_dicom_sr(
    report_or_output: StructuredReport | ModelOutput,
    source: str | Path | None = None,
    study: Study | None = None,
    *,
    differentials_text: str | None = None,
    structured_text: str | None = None,
    series_number: int = 990,
    instance_number: int = 1,
    filing: list[pydicom.Dataset] | None = None,
) -> pydicom.Dataset:
    """A Comprehensive SR dataset for one report; boxes become planar ROIs on `source` when it is a DICOM file.

    `filing`: the headers of the study's images (FILING_TAGS of cxrlm.pacs.study, first image first) when the SR
    is filed into that study on its PACS: it then takes their study and patient modules and lists them all as
    evidence, and boxes go on the first image. Without it, the SR is anonymous and stands in a study of its own.
    """
    hd = _highdicom()
    report = as_structured(report_or_output, study, differentials_text=differentials_text,
                           structured_text=structured_text)
    if filing:
        reference = _reference(filing[0], "the first image")
        anchor = _filing_anchor(filing[0])
    else:
        reference = read_reference(Path(source)) if source else None
        anchor = _anonymous_anchor()
    # TID 1500 needs at least one group: a report with no positive finding says so as a "No Finding" group.
    groups = _roi_groups(report, reference) + _finding_groups(report, reference) or [_no_finding_group(reference)]
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(report.model),
        procedure_reported=_code("413815006", "SCT", "Chest imaging (procedure)"),
        imaging_measurements=groups,
    )
    content[0].ContentSequence.extend(_comments(report))
    evidence = list(filing) if filing else [anchor] + ([reference] if reference is not None else [])
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=content[0],
        series_instance_uid=anchor.SeriesInstanceUID,
        series_number=series_number,
        sop_instance_uid=anchor.SOPInstanceUID,
        instance_number=instance_number,
        manufacturer="cxrlm",
        is_complete=False,
        is_verified=False,
        is_final=False,
    )
    # highdicom records evidence[0] (our anonymous anchor, i.e. the SR itself) as same-study evidence; drop it.
    if not filing and "CurrentRequestedProcedureEvidenceSequence" in sr:
        del sr.CurrentRequestedProcedureEvidenceSequence
    sr.SeriesDescription = SERIES_DESCRIPTION
    return sr


def _highdicom():
    try:
        import highdicom
    except ImportError as err:
        raise ConfigError("DICOM SR export needs highdicom: pip install 'cxrlm[export]'") from err
    return highdicom


def read_reference(path: Path) -> pydicom.Dataset:
    """Only the UIDs and size of the source image: nothing identifying is parsed."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[*REFERENCE_TAGS, "Modality"])
    except (OSError, pydicom.errors.InvalidDicomError) as err:
        raise InputError(f"{path.name}: not a readable DICOM file; pass the source .dcm or no source") from err
    return _reference(ds, path.name)


def _reference(ds: pydicom.Dataset, name: str) -> pydicom.Dataset:
    missing = [tag for tag in REFERENCE_TAGS if tag not in ds]
    if missing:
        raise InputError(f"{name}: DICOM lacks {', '.join(missing)}; cannot reference it from an SR")
    reference = pydicom.Dataset()
    for tag in REFERENCE_TAGS:
        setattr(reference, tag, ds[tag].value)
    reference.Modality = ds.get("Modality") or "OT"  # highdicom refuses non-image modalities (SR, SEG...) here
    if reference.Modality in NON_IMAGE_MODALITIES:
        raise InputError(f"{name}: a {reference.Modality} object is not an image; pass the radiograph's DICOM")
    return reference


def _filing_anchor(first: pydicom.Dataset) -> pydicom.Dataset:
    """The SR's identity when filed into the source study: fresh series and instance, the source's study."""
    anchor = pydicom.Dataset()
    anchor.StudyInstanceUID = first.StudyInstanceUID
    anchor.SeriesInstanceUID = generate_uid()
    anchor.SOPInstanceUID = generate_uid()
    return anchor


def _anonymous_anchor() -> pydicom.Dataset:
    """The SR's own identity: fresh UIDs and an anonymous patient; highdicom copies its patient/study modules."""
    anchor = pydicom.Dataset()
    anchor.StudyInstanceUID = generate_uid()
    anchor.SeriesInstanceUID = generate_uid()
    anchor.SOPInstanceUID = generate_uid()
    anchor.SOPClassUID = ComprehensiveSRStorage
    anchor.StudyDate = datetime.now(UTC).strftime("%Y%m%d")
    anchor.StudyTime = datetime.now(UTC).strftime("%H%M%S")
    for keyword, value in ANONYMOUS_PATIENT.items():
        setattr(anchor, keyword, value)
    return anchor


def _code(value: str, scheme: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def label_concept(label: str | None):
    """The finding type of a CheXpert label (99CXRLM), or the generic DCM "Finding" for an unknown label."""
    if label in LABEL_CODES:
        return _code(LABEL_CODES[label], LABEL_SCHEME, label)
    return _code("121071", "DCM", "Finding")


def _observation_context(model: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(), name=(model or "cxrlm")[:64])
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device)
    )


def _evaluations(finding: PositiveFinding | None):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if finding is None:
        return None, None
    value = codes.SCT.Present if finding.certainty == "present" else codes.SCT.Uncertain
    evaluations = [hd.sr.QualitativeEvaluation(name=label_concept(finding.label), value=value)]
    measurements = None
    if finding.probability is not None:
        measurements = [hd.sr.Measurement(name=codes.DCM.Probability, value=float(finding.probability),
                                          unit=codes.UCUM.NoUnits)]
    return evaluations, measurements


def box_polyline(box: Box, image_size: tuple[int, int] | None, frame: tuple[int, int]) -> np.ndarray:
    """A closed rectangle (5 points, column/row) in the DICOM frame (columns, rows); rescaled if sizes differ."""
    x1, y1, x2, y2 = box.xyxy
    if image_size and tuple(image_size) != tuple(frame):
        sx, sy = frame[0] / image_size[0], frame[1] / image_size[1]
        x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)


def _roi_groups(report: StructuredReport, reference: pydicom.Dataset | None) -> list:
    """One planar ROI per box on the referenced image (none without a DICOM source)."""
    import highdicom as hd

    if reference is None:
        return []
    by_box = {i: f for f in report.positive_findings for i in f.boxes}
    source = hd.sr.SourceImageForRegion.from_source_image(reference)
    frame = (int(reference.Columns), int(reference.Rows))
    groups = []
    for index, box in enumerate(report.boxes):
        finding = by_box.get(index)
        evaluations, measurements = _evaluations(finding)
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                   graphic_data=box_polyline(box, report.image_size, frame), source_image=source)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(),
                                                         identifier=f"box {index}: {box.label}"[:64]),
            referenced_region=region,
            finding_type=label_concept(finding.label if finding else box_label(box)),
            qualitative_evaluations=evaluations,
            measurements=measurements,
        ))
    return groups


def _finding_groups(report: StructuredReport, reference: pydicom.Dataset | None) -> list:
    """Image-level groups for positive findings without an exported ROI."""
    import highdicom as hd

    groups = []
    for finding in report.positive_findings:
        if finding.boxes and reference is not None:
            continue  # already exported as planar ROIs
        evaluations, measurements = _evaluations(finding)
        sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(reference)] if reference else None
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=finding.label),
            finding_type=label_concept(finding.label),
            qualitative_evaluations=evaluations,
            measurements=measurements,
            source_images=sources,
        ))
    return groups


def _no_finding_group(reference: pydicom.Dataset | None):
    import highdicom as hd

    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(reference)] if reference else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="No Finding"),
        finding_type=label_concept("No Finding"),
        source_images=sources,
    )


def _comments(report: StructuredReport) -> list:
    """The model's notice (a demonstration model says so) and the warnings, as TEXT "Comment" items at the root:
    TID 1500 is extensible, and they are what a reader must see next to the findings."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    texts = ([f"Model notice: {report.model_notice}"] if report.model_notice else []) + [
        f"Warning: {warning}" for warning in report.warnings]
    return [hd.sr.TextContentItem(name=codes.DCM.Comment, value=text[:MAX_TEXT],
                                  relationship_type=hd.sr.RelationshipTypeValues.CONTAINS) for text in texts]


def sr_bytes(sr: pydicom.Dataset) -> bytes:
    """The SR as a DICOM Part 10 file in memory."""
    from io import BytesIO

    buffer = BytesIO()
    pydicom.dcmwrite(buffer, sr, enforce_file_format=True)
    return buffer.getvalue()
