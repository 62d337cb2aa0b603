"""Dataset adapters: the real data in ../shared/data, and synthetic trees in each published layout."""

import warnings

import data_layouts
import pytest

from cxrlm.data.manifest import ManifestRecord
from cxrlm.data.sources import SOURCES, build_records, get_source
from cxrlm.data.sources.common import MissingImageWarning, view_position
from cxrlm.data.sources.mimic_cxr import parse_report
from cxrlm.data.sources.vindr_cxr import fuse_boxes
from cxrlm.errors import InputError
from cxrlm.pathologies import CHEXPERT14, VINDR_TO_CHEXPERT


def build(name, root, **kwargs) -> list[ManifestRecord]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingImageWarning)
        return list(build_records(name, root, **kwargs))


def layout(name, tmp_path):
    return data_layouts.LAYOUTS[name](tmp_path / name)


def by_image(records):
    return {r.image: r for r in records}


# ---------------------------------------------------------------- registry


def test_registry_is_complete_and_importable():
    assert set(data_layouts.LAYOUTS) <= set(SOURCES)
    for source in SOURCES.values():
        assert callable(source.records) and source.license and source.citation and source.collection
    with pytest.raises(InputError, match="unknown data source 'nope'; choose one of: nih14"):
        get_source("nope")


def test_bad_root(tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        build("nih14", tmp_path / "missing")
    with pytest.raises(InputError, match="labels.csv not found"):
        build("nih14", tmp_path)


def test_missing_column_is_named(tmp_path):
    (tmp_path / "labels.csv").write_text("image,patient_id\nimages/a.png,1\n")
    with pytest.raises(InputError, match="lacks column\\(s\\) view, Atelectasis"):
        build("nih14", tmp_path)


@pytest.mark.parametrize("text, view", [("PA", "PA"), ("AP Supine", "AP"), ("L", "LATERAL"), ("?", None),
                                        ("", None), ("AP AXIAL", "AP"), ("LL", "LL"), ("SWIMMERS", None)])
def test_view_position(text, view):
    assert view_position(text) == view


# ---------------------------------------------------------------- shared data


@pytest.mark.parametrize("name, folder, count", [
    ("nih14", "nih14", 410),
    ("nih14", "fixtures/nih14", 10),
    ("nih14-64px", "nih14-64px", 972),
    ("covid-chestxray", "covid-chestxray", 491),
    ("hannover-covid", "hannover-covid", 243),
    ("iu-xray-reports", "iu-xray-reports", 1876),
])
def test_shared_sources(shared_data, name, folder, count):
    records = build(name, shared_data / folder)
    assert len(records) == count
    assert len({(r.image, r.study_id) for r in records}) == count
    for rec in records:
        assert set(rec.labels) == set(CHEXPERT14) and rec.split in ("train", "val", "test")
        for box in rec.boxes:
            x1, y1, x2, y2 = box["xyxy"]
            assert 0 <= x1 < x2 <= rec.width and 0 <= y1 < y2 <= rec.height


def test_nih14_labels_and_boxes(shared_data):
    records = by_image(build("nih14", shared_data / "fixtures" / "nih14"))
    rec = records["images/00001933_000.png"]
    assert rec.source_labels["Pneumonia"] == 1 and rec.labels["Pneumonia"] == 1 and rec.labels["Consolidation"] == 1
    assert rec.labels["No Finding"] == 0 and rec.labels["Fracture"] is None  # NIH has no fracture label
    assert rec.boxes == [{"label": "Pneumonia", "xyxy": [277.4, 289.3, 365.2, 386.3], "kind": "finding",
                          "chexpert": "Pneumonia"}]
    assert (rec.width, rec.height, rec.view_position, rec.patient_id) == (512, 512, "PA", "1933")


def test_nih14_infiltrate_box_is_renamed(shared_data):
    labels = {b["label"] for r in build("nih14", shared_data / "nih14") for b in r.boxes}
    assert "Infiltration" in labels and "Infiltrate" not in labels


def test_nih_subsets_share_a_patients_split(shared_data):
    full = {r.patient_id: r.split for r in build("nih14", shared_data / "nih14")}
    small = {r.patient_id: r.split for r in build("nih14-64px", shared_data / "nih14-64px")}
    shared = set(full) & set(small)
    assert all(full[p] == small[p] for p in shared)


def test_covid_collection(shared_data):
    records = build("covid-chestxray", shared_data / "covid-chestxray")
    todo = [r for r in records if r.source_labels["finding"] is None]
    assert len(todo) == 69 and all(v is None for r in todo for v in r.labels.values())
    covid = next(r for r in records if r.source_labels["finding"] == "COVID-19")
    assert covid.labels["Pneumonia"] == 1 and covid.labels["No Finding"] == 0
    normal = next(r for r in records if r.source_labels["finding"] == "No Finding")
    assert normal.labels["No Finding"] == 1 and normal.labels["Pneumonia"] == 0
    scored = [r for r in records if "brixia" in r.extra]
    assert scored and all(r.extra["brixia_global"] == sum(r.extra["brixia"].values()) for r in scored)
    boxed = [r for r in records if r.boxes]
    assert len(boxed) == 106 and all({b["label"] for b in r.boxes} == {"right lung", "left lung"} for r in boxed)
    # the patient's right lung is on the image's left
    assert all(next(b for b in r.boxes if b["label"] == "right lung")["xyxy"][0]
               < next(b for b in r.boxes if b["label"] == "left lung")["xyxy"][0] for r in boxed)
    assert sum(r.extra.get("origin") == "hannover-covid" for r in records) > 50
    assert {r.view_position for r in records} <= {"PA", "AP", "LATERAL", None}
    assert all(r.extra.get("lung_mask_source", "").startswith("lungVAE") for r in records if "lung_mask" in r.extra)


def test_iu_reports_are_text_only(shared_data):
    records = build("iu-xray-reports", shared_data / "iu-xray-reports")
    assert all(r.image is None and r.root is None for r in records)
    rec = next(r for r in records if r.study_id == "2")
    assert rec.report["impression"] == "No acute pulmonary findings." and rec.labels["Cardiomegaly"] == 1
    assert sum(r.labels["No Finding"] == 1 for r in records) == 667


# ---------------------------------------------------------------- published layouts (synthetic)


def test_mimic_cxr(tmp_path):
    root = layout("mimic-cxr", tmp_path)
    with pytest.warns(MissingImageWarning, match="d5.jpg"):
        records = list(build_records("mimic-cxr", root))
    assert len(records) == 4
    recs = {r.extra["dicom_id"]: r for r in records}
    assert recs["d1"].labels["Pleural Effusion"] == 1 and recs["d2"].labels["Pleural Effusion"] == 1  # per study
    assert recs["d2"].view_position == "LATERAL" and (recs["d2"].width, recs["d2"].height) == (32, 40)
    assert recs["d4"].labels["Atelectasis"] == -1 and recs["d4"].labels["Edema"] == 0
    assert recs["d1"].report["impression"] == "Small left pleural effusion."
    assert recs["d1"].report["findings"].startswith("There is a small left pleural effusion. The heart size")
    assert recs["d3"].report is None
    assert recs["d4"].extra["source_split"] == "test"
    assert {r.split for r in records if r.patient_id == "10000032"} == {recs["d1"].split}
    official = build("mimic-cxr", root, official_split=True)
    assert {r.extra["dicom_id"]: r.split for r in official}["d4"] == "test"


def test_mimic_report_parser():
    assert parse_report("FINDINGS: clear.\nIMPRESSION: normal.") == {
        "findings": "clear.", "impression": "normal.", "indication": None, "comparison": None}
    assert parse_report("CONCLUSION:  No acute process.")["impression"] == "No acute process."
    assert parse_report("The report has no sections at all.") is None


def test_chexpert(tmp_path):
    records = by_image(build("chexpert", layout("chexpert", tmp_path)))
    assert set(records) == {"train/patient00001/study1/view1_frontal.jpg", "train/patient00002/study2/view1_frontal.jpg",
                            "train/patient00002/study2/view2_lateral.jpg", "valid/patient64541/study1/view1_frontal.jpg"}
    frontal = records["train/patient00002/study2/view1_frontal.jpg"]
    assert frontal.labels["Cardiomegaly"] == -1 and frontal.labels["Lung Opacity"] == 1 and frontal.labels["Edema"] == 0
    assert frontal.labels["Pneumonia"] is None and frontal.study_id == "patient00002/study2"
    assert records["train/patient00002/study2/view2_lateral.jpg"].view_position == "LATERAL"
    assert records["valid/patient64541/study1/view1_frontal.jpg"].extra["source_split"] == "val"


def test_chexpert_plus(tmp_path):
    records = build("chexpert-plus", layout("chexpert-plus", tmp_path))
    plus = next(r for r in records if r.patient_id == "patient42142")
    assert plus.image == "PNG/train/patient42142/study5/view1_frontal.png"  # the PNG release's copy
    assert plus.report == {"findings": "Mild pulmonary edema. Small bilateral effusions.",
                           "impression": "1. Mild edema.", "indication": "Shortness of breath.",
                           "comparison": "Prior from 2019."}
    assert plus.labels["Edema"] == 1 and plus.labels["No Finding"] is None
    other = next(r for r in records if r.patient_id == "patient64541")
    assert other.report is None and all(v is None for v in other.labels.values())


def test_vindr_fuses_readers(tmp_path):
    records = {r.study_id: r for r in build("vindr-cxr", layout("vindr-cxr", tmp_path))}
    a1 = records["a1"]
    cardio = [b for b in a1.boxes if b["label"] == "Cardiomegaly"]
    assert len(cardio) == 1 and cardio[0]["readers"] == 2 and cardio[0]["xyxy"] == [20.5, 24.5, 44.5, 40.5]
    nodule = next(b for b in a1.boxes if b["label"] == "Nodule/Mass")
    assert nodule["readers"] == 1 and nodule["chexpert"] == "Lung Lesion"
    assert a1.labels["Cardiomegaly"] == 1 and a1.labels["Lung Lesion"] == -1 and a1.labels["No Finding"] == 0
    assert a1.source_labels["Cardiomegaly"] == pytest.approx(2 / 3, abs=1e-3)
    a2 = records["a2"]
    assert a2.boxes == [] and a2.labels["No Finding"] == 1 and a2.labels["Cardiomegaly"] == 0
    assert records["t1"].labels["Pleural Effusion"] == 1 and records["t1"].extra["source_split"] == "test"
    assert (a1.width, a1.height) == (64, 48)


def test_fuse_boxes_keeps_distinct_regions_apart():
    boxes = [("R1", [0, 0, 10, 10]), ("R2", [1, 1, 11, 11]), ("R1", [50, 50, 60, 60]), ("R3", [0, 0, 10, 10])]
    fused = sorted(fuse_boxes(boxes), key=lambda f: f[0][0])
    assert [readers for _, readers in fused] == [3, 1]
    assert fused[0][0] == pytest.approx([1 / 3, 1 / 3, 31 / 3, 31 / 3])


def test_vindr_label_map_covers_the_published_columns():
    assert set(data_layouts.VINDR_IMAGE_LABELS) <= set(VINDR_TO_CHEXPERT)
    assert set(VINDR_TO_CHEXPERT.values()) - {None} <= set(CHEXPERT14)


def test_chest_imagenome_rescales_to_the_stored_image(tmp_path):
    (rec,) = build("chest-imagenome", layout("chest-imagenome", tmp_path))
    boxes = {b["label"]: b for b in rec.boxes}
    assert boxes["right lung"]["xyxy"] == [5.0, 4.0, 24.0, 35.0] and boxes["right lung"]["kind"] == "anatomy"
    assert rec.labels["Lung Opacity"] == 1 and rec.labels["Cardiomegaly"] == 0 and rec.labels["Support Devices"] == 1
    assert rec.labels["Pneumonia"] == 0 and rec.labels["No Finding"] == 0
    assert rec.source_labels["device:picc"] == 1 and rec.patient_id == "10000032"


def test_ms_cxr_groups_boxes_by_phrase_and_rescales(tmp_path):
    records = {r.extra["dicom_id"]: r for r in build("ms-cxr", layout("ms-cxr", tmp_path))}
    aaa = records["aaa"]
    assert [b["xyxy"] for b in aaa.boxes] == [[5.0, 10.0, 20.0, 30.0], [60.0, 10.0, 75.0, 30.0]]
    assert {b["phrase"] for b in aaa.boxes} == {"bilateral pneumonia"} and aaa.labels["Pneumonia"] == 1
    assert aaa.patient_id == "15857479" and aaa.study_id == "57574085"
    assert aaa.image.endswith("aaa.jpg") and aaa.extra["source_split"] == "test"


def test_padchest_gr(tmp_path):
    records = {r.study_id: r for r in build("padchest-gr", layout("padchest-gr", tmp_path))}
    st1 = records["st1"]
    assert st1.patient_id == "pat1" and st1.labels["Cardiomegaly"] == 1 and st1.labels["Pleural Effusion"] == 1
    assert st1.boxes[0]["xyxy"] == [15.0, 16.0, 35.0, 32.0] and st1.boxes[1]["phrase"] == "Right pleural effusion."
    assert st1.report["findings"] == "Cardiomegaly. Right pleural effusion. No pneumothorax."
    assert records["st2"].labels["No Finding"] == 1 and records["st2"].extra["source_split"] == "val"


def test_padchest_gr_rejects_pixel_boxes(tmp_path):
    root = layout("padchest-gr", tmp_path)
    path = root / "grounded_reports_20240819.json"
    path.write_text(path.read_text().replace("[0.3, 0.4, 0.7, 0.8]", "[30, 40, 70, 80]"))
    with pytest.raises(InputError, match="not four fractions"):
        build("padchest-gr", root)


@pytest.mark.parametrize("name", sorted(data_layouts.LAYOUTS))
def test_every_layout_needs_its_files(tmp_path, name):
    with pytest.raises(InputError):
        build(name, tmp_path)
