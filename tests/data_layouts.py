"""Tiny synthetic trees in the EXACT published layouts of datasets that cannot ship here.

File names, folders and CSV/JSON columns follow each release (MIMIC-CXR-JPG 2.0.0, CheXpert 1.0,
CheXpert Plus, VinDr-CXR 1.0.0, Chest ImaGenome 1.0.0, MS-CXR, PadChest-GR); pixels are blank and
every value is made up. Used by tests/test_data_*.py.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

CHEXPERT_ORDER = (  # the column order of CheXpert's train.csv
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
MIMIC_LABEL_ORDER = tuple(sorted(CHEXPERT_ORDER))  # mimic-cxr-2.0.0-chexpert.csv is alphabetical


def image(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), 90, np.uint8)).save(path)
    return path


def write_csv(path: Path, header, rows, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def dicom(path: Path, size: tuple[int, int]) -> Path:
    """A minimal valid DICOM (CR, MONOCHROME2, 8 bit)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.Rows, ds.Columns = "CR", size[1], size[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((size[1], size[0]), np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 COMPARISON:  None.

 FINDINGS:

 There is a small left pleural effusion.  The heart size is
 normal.

 IMPRESSION:

 Small left pleural effusion.
"""


def mimic_cxr(root: Path) -> Path:
    """Two patients, three studies, four images; one image listed but not downloaded."""
    images = [  # dicom_id, subject, study, view, width, height, split
        ("d1", "10000032", "50414267", "PA", 40, 32, "train"),
        ("d2", "10000032", "50414267", "LATERAL", 32, 40, "train"),
        ("d3", "10000032", "53189527", "AP", 40, 32, "train"),
        ("d4", "11000011", "59000000", "PA", 40, 32, "test"),
        ("d5", "11000011", "59000000", "LATERAL", 32, 40, "test"),  # absent: a partial download
    ]
    for dicom_id, subject, study, _, w, h, _ in images[:4]:
        image(root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg", (w, h))
    meta_header = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                   "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                   "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta_header,
              [(d, s, st, "CHEST (PA AND LAT)", v, h, w, "21800506", "213014.531", "", "", "Erect")
               for d, s, st, v, w, h, _ in images], gz=True)
    labels = {"50414267": {"Pleural Effusion": "1.0", "No Finding": ""},
              "53189527": {"No Finding": "1.0"},
              "59000000": {"Atelectasis": "-1.0", "Support Devices": "1.0", "Edema": "0.0"}}
    rows = [("10000032" if st != "59000000" else "11000011", st, *(lab.get(n, "") for n in MIMIC_LABEL_ORDER))
            for st, lab in labels.items()]
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ("subject_id", "study_id", *MIMIC_LABEL_ORDER), rows, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ("dicom_id", "study_id", "subject_id", "split"),
              [(d, st, s, sp.replace("val", "validate")) for d, s, st, _, _, _, sp in images], gz=True)
    (root / "files/p10/p10000032/s50414267.txt").write_text(MIMIC_REPORT)
    return root


def chexpert(root: Path) -> Path:
    """CheXpert-v1.0-small: train.csv and valid.csv with Path relative to the release's parent."""
    header = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_ORDER)
    prefix = "CheXpert-v1.0-small"
    rows = [
        ("train/patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP",
         {"No Finding": "1.0", "Support Devices": "1.0"}),
        ("train/patient00002/study2/view1_frontal.jpg", "Female", "87", "Frontal", "AP",
         {"Cardiomegaly": "-1.0", "Lung Opacity": "1.0", "Edema": "0.0", "Fracture": "1.0"}),
        ("train/patient00002/study2/view2_lateral.jpg", "Female", "87", "Lateral", "",
         {"Cardiomegaly": "-1.0", "Lung Opacity": "1.0"}),
    ]
    valid = [("valid/patient64541/study1/view1_frontal.jpg", "Male", "73", "Frontal", "AP",
              {k: "0.0" for k in CHEXPERT_ORDER} | {"Cardiomegaly": "1.0"})]
    for name, table in (("train.csv", rows), ("valid.csv", valid)):
        write_csv(root / name, header,
                  [(f"{prefix}/{p}", sex, age, fl, appa, *(lab.get(n, "") for n in CHEXPERT_ORDER))
                   for p, sex, age, fl, appa, lab in table])
        for p, *_ in table:
            image(root / p, (32, 40))
    return root


def chexpert_plus(root: Path) -> Path:
    header = ("path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id",
              "patient_report_date_order", "report", "section_narrative", "section_clinical_history",
              "section_history", "section_comparison", "section_technique", "section_procedure_comments",
              "section_findings", "section_impression", "section_end_of_impression", "section_summary",
              "section_accession_number", "age", "sex", "race", "ethnicity", "interpreter_needed",
              "insurance_type", "recent_bmi", "deceased", "split")
    rows = [
        ("train/patient42142/study5/view1_frontal.jpg", "train/patient42142/study5/view1_frontal.dcm", "Frontal",
         "AP", "patient42142", "5", "full text", "", "Shortness of breath.", "", "Prior from 2019.", "", "",
         "Mild pulmonary edema. Small bilateral effusions.", "1. Mild edema.", "", "", "", "71", "Male", "", "",
         "", "", "", "", "train"),
        ("valid/patient64541/study1/view1_frontal.jpg", "", "Frontal", "PA", "patient64541", "1", "", "", "", "",
         "", "", "", "", "", "", "", "", "55", "Female", "", "", "", "", "", "", "valid"),
    ]
    write_csv(root / "df_chexpert_plus_240401.csv", header, rows)
    image(root / "PNG/train/patient42142/study5/view1_frontal.png", (40, 32))  # the PNG release
    image(root / "valid/patient64541/study1/view1_frontal.jpg", (40, 32))
    labels = root / "chexbert_labels/report_fixed.json"
    labels.parent.mkdir(parents=True)
    labels.write_text(json.dumps({"path_to_image": rows[0][0], "Edema": 1.0, "Pleural Effusion": 1.0,
                                  "No Finding": None}) + "\n")
    return root


VINDR_IMAGE_LABELS = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
                      "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
                      "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
                      "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
                      "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")


def vindr_cxr(root: Path) -> Path:
    """Image a1: three readers, two agree on cardiomegaly boxes, one reader adds a nodule. a2: no finding."""
    for image_id in ("a1", "a2"):
        dicom(root / f"train/{image_id}.dicom", (64, 48))
    dicom(root / "test/t1.dicom", (64, 48))
    box_header = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")
    write_csv(root / "annotations/annotations_train.csv", box_header, [
        ("a1", "R8", "Cardiomegaly", "20", "24", "44", "40"),
        ("a1", "R9", "Cardiomegaly", "21", "25", "45", "41"),
        ("a1", "R10", "Nodule/Mass", "5", "5", "9", "9"),
        ("a2", "R8", "No finding", "", "", "", ""),
        ("a2", "R9", "No finding", "", "", "", ""),
        ("a2", "R10", "No finding", "", "", "", ""),
    ])
    write_csv(root / "annotations/annotations_test.csv", box_header,
              [("t1", "R11", "Pleural effusion", "40", "30", "60", "46")])

    def label_row(image_id, reader, positives):
        return (image_id, reader, *(1 if name in positives else 0 for name in VINDR_IMAGE_LABELS))

    write_csv(root / "annotations/image_labels_train.csv", ("image_id", "rad_id", *VINDR_IMAGE_LABELS), [
        label_row("a1", "R8", {"Cardiomegaly"}),
        label_row("a1", "R9", {"Cardiomegaly"}),
        label_row("a1", "R10", {"Nodule/Mass", "Other diseases"}),
        *(label_row("a2", r, {"No finding"}) for r in ("R8", "R9", "R10")),
    ])
    write_csv(root / "annotations/image_labels_test.csv", ("image_id", *VINDR_IMAGE_LABELS),
              [("t1", *(1 if n == "Pleural effusion" else 0 for n in VINDR_IMAGE_LABELS))])
    return root


def chest_imagenome(root: Path) -> Path:
    """One scene graph; the stored JPEG is half the original size, so boxes must halve."""
    subject, study, dicom_id = "10000032", "50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
    image(root / f"files/p10/p{subject}/s{study}/{dicom_id}.jpg", (50, 40))
    objects = [
        {"object_id": f"{dicom_id}_right lung", "x1": 20, "y1": 30, "x2": 100, "y2": 180, "width": 80,
         "height": 150, "bbox_name": "right lung", "synsets": ["C0225706"], "name": "Right lung",
         "original_x1": 10, "original_y1": 8, "original_x2": 48, "original_y2": 70,
         "original_width": 100, "original_height": 80},
        {"object_id": f"{dicom_id}_cardiac silhouette", "x1": 80, "y1": 90, "x2": 150, "y2": 170, "width": 70,
         "height": 80, "bbox_name": "cardiac silhouette", "synsets": ["C0018787"], "name": "Cardiac silhouette",
         "original_x1": 40, "original_y1": 40, "original_x2": 70, "original_y2": 72,
         "original_width": 100, "original_height": 80},
    ]
    attributes = [
        {"right lung": True, "bbox_name": "right lung", "synsets": ["C0225706"], "name": "Right lung",
         "attributes": [["anatomicalfinding|yes|lung opacity", "disease|no|pneumonia", "nlp|yes|abnormal"]],
         "attributes_ids": [["CL556823", "C0032285", "C1704258"]], "phrases": ["Right lower lobe opacity."],
         "phrase_IDs": ["s1"], "sections": ["finding"], "comparison_cues": [[]], "temporal_cues": [[]],
         "severity_cues": [[]], "texture_cues": [[]], "object_id": f"{dicom_id}_right lung"},
        {"cardiac silhouette": True, "bbox_name": "cardiac silhouette", "name": "Cardiac silhouette",
         "attributes": [["anatomicalfinding|no|enlarged cardiac silhouette", "tubesandlines|yes|picc"]],
         "phrases": ["Heart size normal. Right PICC in place."], "object_id": f"{dicom_id}_cardiac silhouette"},
    ]
    graph = {"image_id": dicom_id, "viewpoint": "PA", "patient_id": int(subject), "study_id": int(study),
             "gender": "F", "age_decile": "50-60", "reason_for_exam": "cough", "StudyOrder": 1,
             "StudyDateTime": "2180-05-06 21:30:14 UTC", "objects": objects, "attributes": attributes,
             "relationships": []}
    path = root / f"silver_dataset/scene_graph/{dicom_id}_SceneGraph.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(graph))
    return root


def ms_cxr(root: Path) -> Path:
    """Two boxes for one phrase on an image stored at half its annotated size, one box on another."""
    header = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width",
              "image_height", "split")
    path1 = "files/p15/p15857479/s57574085/aaa.dcm"
    path2 = "files/p12/p12000001/s51000000/bbb.dcm"
    write_csv(root / "MS_CXR_Local_Alignment_v1.1.0.csv", header, [
        ("aaa", "Pneumonia", "bilateral pneumonia", path1, "10", "20", "30", "40", "200", "160", "test"),
        ("aaa", "Pneumonia", "bilateral pneumonia", path1, "120", "20", "30", "40", "200", "160", "test"),
        ("bbb", "Pleural Effusion", "small left effusion", path2, "60", "50", "20", "10", "100", "80", "train"),
    ])
    image(root / path1.replace(".dcm", ".jpg"), (100, 80))
    image(root / path2.replace(".dcm", ".jpg"), (100, 80))
    return root


def padchest_gr(root: Path) -> Path:
    studies = [
        {"StudyID": "st1", "ImageID": "img1.png", "findings": [
            {"sentence_en": "Cardiomegaly.", "sentence_es": "Cardiomegalia.", "abnormal": True,
             "boxes": [[0.3, 0.4, 0.7, 0.8]], "extra_boxes": [], "labels": ["cardiomegaly"],
             "locations": ["cardiac"], "progression": None},
            {"sentence_en": "Right pleural effusion.", "sentence_es": "Derrame pleural derecho.", "abnormal": True,
             "boxes": [[0.05, 0.6, 0.4, 0.95]], "labels": ["pleural effusion"], "locations": ["right"]},
            {"sentence_en": "No pneumothorax.", "sentence_es": "Sin neumotorax.", "abnormal": False},
        ]},
        {"StudyID": "st2", "ImageID": "img2.png", "findings": [
            {"sentence_en": "No significant findings.", "sentence_es": "Sin hallazgos.", "abnormal": False}]},
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "grounded_reports_20240819.json").write_text(json.dumps(studies))
    write_csv(root / "master_table.csv",
              ("StudyID", "ImageID", "PatientID", "split", "label", "label_group", "PatientSex_DICOM"),
              [("st1", "img1.png", "pat1", "train", "cardiomegaly", "cardiomegaly", "M"),
               ("st1", "img1.png", "pat1", "train", "pleural effusion", "pleural effusion", "M"),
               ("st2", "img2.png", "pat2", "validation", "normal", "normal", "F")])
    image(root / "PadChest_GR/img1.png", (50, 40))
    image(root / "PadChest_GR/img2.png", (50, 40))
    return root


LAYOUTS = {
    "mimic-cxr": mimic_cxr,
    "chexpert": chexpert,
    "chexpert-plus": chexpert_plus,
    "vindr-cxr": vindr_cxr,
    "chest-imagenome": chest_imagenome,
    "ms-cxr": ms_cxr,
    "padchest-gr": padchest_gr,
}
