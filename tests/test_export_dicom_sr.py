"""DICOM SR export: write, read back with pydicom and highdicom, compare ROIs with boxes, check for PHI leaks."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

hd = pytest.importorskip("highdicom")

from cxrlm.errors import InputError
from cxrlm.export import export
from cxrlm.export.dicom_sr import sr_bytes, to_dicom_sr
from cxrlm.types import Box, Label, ModelOutput

PHI_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
            "ReferringPhysicianName")
SYNTHETIC_PHI = {"PatientName": "Doe^Jane", "PatientID": "MRN-4711", "PatientBirthDate": "19700101",
                 "AccessionNumber": "ACC-0815", "InstitutionName": "St Example Hospital",
                 "ReferringPhysicianName": "Who^Doctor"}


def write_synthetic_cr(path, rows=300, columns=240) -> Dataset:
    """A small CR MONOCHROME2 image carrying fake identifying tags, to prove none reach the SR."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition = "CR", "PA"
    for keyword, value in SYNTHETIC_PHI.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 256, (rows, columns), dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def _output(size, boxes_norm) -> ModelOutput:
    boxes = [Box.from_norm(label, xyxy, size) for label, xyxy in boxes_norm]
    return ModelOutput(task="report", model="test-model", raw_text="", image_size=size,
                       findings="Right pleural effusion. Left lower lobe nodule. No pneumothorax.",
                       labels=[Label("Pleural Effusion", 0.87), Label("Lung Lesion", None)], boxes=boxes)


BOXES = [("Pleural Effusion", (0.05, 0.55, 0.45, 0.95)), ("nodule", (0.6, 0.6, 0.7, 0.7)),
         ("unknown thing", (0.2, 0.1, 0.3, 0.2))]


def _round_trip(tmp_path, sr):
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(sr))
    return path, pydicom.dcmread(path), hd.sr.srread(path)


def _rectangle(box: Box) -> np.ndarray:
    x1, y1, x2, y2 = box.xyxy
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])


def _all_values(ds: Dataset) -> list[str]:
    values = []
    for element in ds.iterall():
        if element.VR != "SQ":
            values.append(str(element.value))
    return values


def test_synthetic_dicom_round_trip_rois_match_boxes(tmp_path):
    source = write_synthetic_cr(tmp_path / "cr.dcm")
    output = _output((240, 300), BOXES)
    _, plain, sr = _round_trip(tmp_path, to_dicom_sr(output, tmp_path / "cr.dcm"))
    assert plain.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert (plain.CompletionFlag, plain.VerificationFlag, plain.PreliminaryFlag) == (
        "PARTIAL", "UNVERIFIED", "PRELIMINARY")
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(output.boxes)
    for group, box in zip(groups, output.boxes, strict=True):
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        np.testing.assert_allclose(group.roi.value, _rectangle(box), atol=1e-3)
        image = group.roi.ContentSequence[0]  # SCOORD -> SELECTED FROM -> IMAGE
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    meanings = [g.finding_type.meaning for g in groups]
    assert meanings == ["Pleural Effusion", "Lung Lesion", "Finding"]
    effusion = groups[0]
    assert [m.value for m in effusion.get_measurements()] == [pytest.approx(0.87)]
    assert effusion.get_qualitative_evaluations()[0].value.meaning == "Present"


def test_sr_references_source_only_in_evidence_and_has_fresh_study(tmp_path):
    source = write_synthetic_cr(tmp_path / "cr.dcm")
    _, plain, _ = _round_trip(tmp_path, to_dicom_sr(_output((240, 300), BOXES), tmp_path / "cr.dcm"))
    assert plain.StudyInstanceUID != source.StudyInstanceUID
    evidence = plain.PertinentOtherEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert "CurrentRequestedProcedureEvidenceSequence" not in plain


def test_no_phi_from_synthetic_source(tmp_path):
    write_synthetic_cr(tmp_path / "cr.dcm")
    path, plain, _ = _round_trip(tmp_path, to_dicom_sr(_output((240, 300), BOXES), tmp_path / "cr.dcm"))
    raw = path.read_bytes()
    for keyword, value in SYNTHETIC_PHI.items():
        assert value.encode() not in raw, keyword
    assert plain.PatientID == "ANON"
    assert "InstitutionName" not in plain


def test_real_dicom_round_trip_and_no_phi(tmp_path, real_dicom):
    from cxrlm.io import load_image

    image = load_image(real_dicom)
    output = _output(image.size, BOXES)
    path, plain, sr = _round_trip(tmp_path, to_dicom_sr(output, real_dicom))
    groups = sr.content.get_planar_roi_measurement_groups()
    for group, box in zip(groups, output.boxes, strict=True):
        np.testing.assert_allclose(group.roi.value, _rectangle(box), atol=1e-2)
    source = pydicom.dcmread(real_dicom, stop_before_pixels=True)
    values = set(_all_values(plain))
    raw = path.read_bytes()
    for keyword in PHI_TAGS:
        value = str(source.get(keyword) or "")
        if value:
            assert value not in values, keyword
            if len(value) >= 6:  # short values ("ward") can occur inside unrelated text
                assert value.encode() not in raw, keyword


def test_boxes_are_rescaled_when_output_frame_differs_from_dicom(tmp_path):
    write_synthetic_cr(tmp_path / "cr.dcm", rows=300, columns=240)
    output = _output((120, 150), BOXES[:1])  # the model saw a half-size image
    _, _, sr = _round_trip(tmp_path, to_dicom_sr(output, tmp_path / "cr.dcm"))
    roi = sr.content.get_planar_roi_measurement_groups()[0].roi.value
    np.testing.assert_allclose(roi[0], [0.05 * 240, 0.55 * 300], atol=0.2)
    np.testing.assert_allclose(roi[2], [0.45 * 240, 0.95 * 300], atol=0.2)


def test_without_dicom_source_only_qualitative_groups(tmp_path):
    _, plain, sr = _round_trip(tmp_path, to_dicom_sr(_output((240, 300), BOXES), None))
    assert sr.content.get_planar_roi_measurement_groups() == []
    groups = sr.content.get_image_measurement_groups()
    assert sorted(g.finding_type.meaning for g in groups) == ["Lung Lesion", "Pleural Effusion"]
    assert "PertinentOtherEvidenceSequence" not in plain and plain.PatientID == "ANON"


def test_bad_sources_raise_input_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG not dicom")
    with pytest.raises(InputError, match="not a readable DICOM"):
        to_dicom_sr(_output((240, 300), BOXES), tmp_path / "x.png")
    with pytest.raises(InputError):
        to_dicom_sr(_output((240, 300), BOXES), tmp_path / "missing.dcm")
    ds = write_synthetic_cr(tmp_path / "cr.dcm")
    del ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "no_uid.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="SOPInstanceUID"):
        to_dicom_sr(_output((240, 300), BOXES), tmp_path / "no_uid.dcm")


def test_export_sr_format_returns_dicom_bytes(tmp_path):
    write_synthetic_cr(tmp_path / "cr.dcm")
    data = export(_output((240, 300), BOXES), "sr", source=tmp_path / "cr.dcm")
    assert isinstance(data, bytes) and data[128:132] == b"DICM"


def test_report_with_no_findings_still_exports_a_no_finding_group():
    from io import BytesIO

    import pydicom

    from cxrlm.export.dicom_sr import sr_bytes, to_dicom_sr
    from cxrlm.types import ModelOutput

    sr = to_dicom_sr(ModelOutput(task="report", model="m", raw_text="", image_size=(100, 100)))
    ds = pydicom.dcmread(BytesIO(sr_bytes(sr)))
    assert ds.CompletionFlag == "PARTIAL" and ds.VerificationFlag == "UNVERIFIED"
    assert "No Finding" in str(ds.ContentSequence)
