"""The input gate (cxrlm.gate): refusals with a reason, views from the image, the override, the shipped figures."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlm.cli import main
from cxrlm.errors import InputError
from cxrlm.gate import GateRefusal, check_image, check_study, check_views
from cxrlm.io import load_image, load_study
from cxrlm.types import Study, XrayImage

NO_MODEL = "/nonexistent/model"  # a refusal must come before the model is loaded


def pydicom_file(name: str) -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files" / name


@pytest.fixture
def photo(tmp_path) -> Path:
    data = pytest.importorskip("skimage.data")
    path = tmp_path / "photo.jpg"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture
def ct_png(tmp_path) -> Path:
    """pydicom's CT slice, windowed and saved as PNG: only the image check can tell."""
    import pydicom

    from cxrlm.io.dicom import to_display

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    path = tmp_path / "slice.png"
    Image.fromarray(to_display(ds.pixel_array, ds)[0]).save(path)
    return path


def refusal(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_colour_photo_is_refused_in_one_line(photo, capsys):
    err = refusal(["report", str(photo), "--model", NO_MODEL, "--gate", "on"], capsys)
    assert err.startswith("error: photo.jpg: not a chest radiograph: looks like a colour photograph")
    assert "(score 0.0" in err and "--gate warn" in err


def test_ct_dicom_is_refused_by_its_modality(capsys):
    err = refusal(["classify", str(pydicom_file("CT_small.dcm")), "--model", NO_MODEL, "--gate", "on"], capsys)
    assert "Modality is CT" in err and "looks like a CT slice" in err


def test_ct_slice_as_png_is_refused_by_the_image_check(ct_png, capsys):
    err = refusal(["ground", str(ct_png), "heart", "--model", NO_MODEL, "--gate", "on"], capsys)
    assert "slice.png: not a chest radiograph: looks like a CT or MR slice" in err


def test_override_lets_the_image_through(photo, capsys):
    # warn and off: the gate no longer stops the run, so the next problem is the (missing) model
    for mode in ("warn", "off"):
        assert main(["report", str(photo), "--model", NO_MODEL, "--gate", mode]) == 2
        assert "not a chest radiograph" not in capsys.readouterr().err
    image = load_image(photo)
    check_image(image, "warn")
    assert any(w.startswith("gate: not a chest radiograph") for w in image.warnings)
    assert image.view_position is None  # no view is guessed for an image the gate judged not a chest radiograph


def test_real_frontal_passes_and_gets_a_frontal_view(fixture_pngs):
    if not fixture_pngs:
        pytest.skip("no fixture PNGs")
    study = load_study(fixture_pngs[:3])
    check_study(study, "on")
    for image in study.images:
        assert image.view_position == "FRONTAL" and image.is_frontal
        assert image.metadata["gate_chest_score"] >= 0.6 and image.metadata["gate_view"] == "frontal"


def test_real_lateral_gets_a_lateral_view(shared_data):
    from cxrlm.gate.fit import side_of

    with open(shared_data / "covid-chestxray/metadata.csv", newline="") as handle:
        laterals = [row for row in csv.DictReader(handle) if row["view"] == "L"
                    and side_of(f"covid:{row['patientid']}") == "held_out"]  # fmt: skip
    study = load_study([shared_data / "covid-chestxray" / row["image"] for row in laterals[:3]])
    check_study(study, "on")
    assert [image.view_position for image in study.images] == ["LATERAL"] * 3


def test_a_given_view_is_not_overwritten(fixture_pngs):
    if not fixture_pngs:
        pytest.skip("no fixture PNGs")
    study = load_study(fixture_pngs[:1], view_positions=["AP"])
    check_study(study, "on")
    assert study.images[0].view_position == "AP"


def test_frontal_only_model_refuses_a_lateral_study():
    lateral = XrayImage(pixels=np.zeros((8, 8), np.uint8), source="lat.png", view_position="LATERAL")
    frontal = XrayImage(pixels=np.zeros((8, 8), np.uint8), source="pa.png", view_position="PA")
    with pytest.raises(GateRefusal, match="lateral view: m reads frontal views only"):
        check_views(Study(images=[lateral]), ("frontal",), "m", "on")
    check_views(Study(images=[frontal, lateral]), ("frontal",), "m", "on")  # with a frontal view: a warning
    assert "m reads frontal views only: the lateral view is extra context" in lateral.warnings
    check_views(Study(images=[lateral]), ("frontal", "lateral"), "m", "on")  # the default profile reads both


def test_body_part_and_secondary_image_type(tmp_path, fixture_pngs):
    if not fixture_pngs:
        pytest.skip("no fixture PNGs")
    from tests.test_dicom import make_dicom

    pixels = load_image(fixture_pngs[0]).pixels
    knee = make_dicom(tmp_path / "knee.dcm", pixels, BodyPartExamined="KNEE")
    image = load_image(knee)
    assert image.metadata["BodyPartExamined"] == "KNEE"
    with pytest.raises(GateRefusal, match="BodyPartExamined is KNEE, not chest"):
        check_image(image, "on")
    capture = load_image(make_dicom(tmp_path / "sc.dcm", pixels, BodyPartExamined="CHEST",
                                    ImageType=["DERIVED", "SECONDARY"]))
    check_image(capture, "on")
    assert any("ImageType is DERIVED/SECONDARY" in w for w in capture.warnings)


def test_unknown_mode_is_refused():
    with pytest.raises(InputError, match="gate mode 'maybe'"):
        check_image(XrayImage(pixels=np.zeros((8, 8), np.uint8)), "maybe")


def test_gate_check_verb(photo, fixture_pngs, capsys):
    if not fixture_pngs:
        pytest.skip("no fixture PNGs")
    assert main(["gate", "check", str(fixture_pngs[0]), str(photo)]) == 2
    chest, refused = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert chest["verdict"] == "pass" and chest["view_position"] == "FRONTAL"
    assert refused["verdict"] == "refused" and "colour photograph" in refused["reason"]


def test_server_refuses_a_photo_upload(photo, tiny_model, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cxrlm.serve.app import ServeSettings, create_app
    from cxrlm.serve.storage import Store

    store = Store(f"sqlite:///{tmp_path / 'g.db'}", tmp_path)
    app = create_app(tiny_model, store, ServeSettings(gate="on"))
    with TestClient(app) as client:
        response = client.post("/v1/studies", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
    store.close()
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "not a chest radiograph: looks like a colour photograph" in message and "--gate warn" in message


@pytest.mark.slow
def test_shipped_parameters_give_the_documented_held_out_figures(shared_data):
    """Rebuild the held-out set (about 15 s) and score it with the shipped parameters: the card's figures."""
    pytest.importorskip("skimage")
    from importlib.resources import files

    from cxrlm.gate.classifier import THRESHOLDS, shipped
    from cxrlm.gate.fit import build_sets, measure

    card = json.loads(files("cxrlm.gate").joinpath("gate.json").read_text())
    features, classes, _ = build_sets(shared_data, progress=lambda _: None, sides=("held_out",))["held_out"]
    gate = shipped()
    params = {"mean": gate.mean, "scale": gate.scale, "classes": np.array(gate.classes)}
    for i, (weights, bias) in enumerate(gate.layers):
        params[f"weights_{i}"], params[f"bias_{i}"] = weights, bias
    results = measure(params, features, classes, THRESHOLDS)
    assert results == card["held_out_results"]
    assert results["chest_images"] >= 100 and results["non_chest_images"] >= 100
    assert results["non_chest_refusal_rate"] >= 0.95 and results["chest_false_refusal_rate"] <= 0.01
    assert results["view_accuracy"] >= 0.95


def test_real_frontal_runs_through_the_cli_with_the_gate_on(fixture_pngs, tiny_checkpoint, capsys):
    if not fixture_pngs:
        pytest.skip("no fixture PNGs")
    argv = ["classify", str(fixture_pngs[0]), "--model", str(tiny_checkpoint), "--gate", "on", "--json"]
    assert main(argv) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any(w.startswith("view FRONTAL estimated from the image") for w in warnings)
    assert not any("chest radiograph" in w for w in warnings)


def test_profile_views_are_validated():
    from dataclasses import replace

    from cxrlm.models.profiles import PROFILES

    profile = PROFILES["nv-reason-cxr"]
    assert profile.views == ("frontal", "lateral")
    assert replace(profile, views=["frontal"]).views == ("frontal",)  # a cxrlm.json list
    for bad in ([], "frontal", ["oblique"]):
        with pytest.raises(ValueError, match="views"):
            replace(profile, views=bad)
