"""Baselines: the thumbnail embedding, retrieval, label prevalence and mean box, by hand."""

import numpy as np
import pytest

from cxrlm.data.manifest import ManifestRecord
from cxrlm.eval import baselines as BL
from cxrlm.pathologies import CLASSIFY_LABELS
from cxrlm.types import XrayImage


def _record(labels=None, boxes=(), report=None, image="x.png", width=100, height=200):
    record = ManifestRecord(
        dataset="t",
        study_id="s",
        patient_id="p",
        image=image,
        split="train",
        boxes=list(boxes),
        report=report,
        width=width,
        height=height,
    )
    record.labels.update(labels or {})
    return record


def _pixels(seed, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def test_thumbnail_embedding_ignores_brightness_and_contrast():
    pixels = _pixels(0).astype(float) * 0.5 + 40
    a = BL.thumbnail_embedding(pixels.astype(np.uint8))
    b = BL.thumbnail_embedding((pixels * 1.4 + 10).astype(np.uint8))  # stays below 255
    assert a.shape == (1024,) and np.linalg.norm(a) == pytest.approx(1.0)
    assert a @ b > 0.99
    assert a @ BL.thumbnail_embedding(_pixels(1)) < 0.3
    assert not BL.thumbnail_embedding(np.full((50, 40), 7, np.uint8)).any()  # flat image: zero vector, no NaN


def test_nearest_neighbour_copies_the_closest_training_study():
    records = [
        _record({"Edema": 1, "Cardiomegaly": 0}, report={"findings": "Edema.", "impression": None}),
        _record({"Cardiomegaly": 1}, report={"findings": None, "impression": "Cardiomegaly."}),
    ]
    embeddings = np.stack([BL.thumbnail_embedding(_pixels(i)) for i in range(2)])
    prevalence = BL.label_prevalence(records)
    model = BL.NearestNeighbour(embeddings, records, prevalence)
    query = XrayImage(pixels=_pixels(1))
    assert model.predict(query, "report").impression == "Cardiomegaly."
    probs = model.predict(query, "classify").probabilities
    assert probs["Cardiomegaly"] == 1.0
    assert probs["Edema"] == prevalence["Edema"] == 1.0  # unknown in the neighbour: the prevalence
    assert probs["Fracture"] == 0.0


def test_label_prevalence_counts_known_values_only():
    records = [
        _record({"Edema": 1}),
        _record({"Edema": 0}),
        _record({"Edema": -1}),
        _record({"Edema": None}),
        _record({"Edema": 0}),
    ]
    prevalence = BL.label_prevalence(records)
    assert prevalence["Edema"] == pytest.approx(1 / 3) and prevalence["Fracture"] == 0.0
    out = BL.LabelPrior(prevalence).predict(XrayImage(pixels=_pixels(0)), "classify")
    assert out.probabilities["Edema"] == pytest.approx(1 / 3) and out.labels == []


def test_mean_box_in_relative_coordinates():
    records = [
        _record(boxes=[{"label": "Effusion", "xyxy": [10, 20, 50, 100]}], width=100, height=200),
        _record(boxes=[{"label": "pleural effusion", "xyxy": [0, 0, 100, 100]}], width=200, height=100),
        _record(boxes=[{"label": "Nodule", "xyxy": [0, 0, 10, 10]}], width=None, height=None),  # no size: skipped
    ]
    means, overall = BL.mean_boxes(records)
    assert set(means) == {"Pleural Effusion"}  # NIH and free-text names meet on the CheXpert name
    assert means["Pleural Effusion"] == pytest.approx(((0.1 + 0) / 2, (0.1 + 0) / 2, (0.5 + 0.5) / 2, (0.5 + 1) / 2))
    box = (
        BL.MeanBox(means, overall)
        .predict(XrayImage(pixels=np.zeros((400, 300), np.uint8)), "ground", phrase="Effusion")
        .boxes[0]
    )
    assert box.xyxy == pytest.approx((15.0, 20.0, 150.0, 300.0))
    unknown = BL.MeanBox(means, overall).predict(
        XrayImage(pixels=np.zeros((10, 10), np.uint8)), "ground", phrase="Hernia"
    )
    assert unknown.boxes[0].label == "Hernia"


def test_constant_normal():
    image = XrayImage(pixels=_pixels(0))
    report = BL.ConstantNormal().predict(image, "report")
    assert report.impression == BL.NORMAL_IMPRESSION and "lungs are clear" in report.findings
    probs = BL.ConstantNormal().predict(image, "classify").probabilities
    assert probs["No Finding"] == 1.0 and sum(probs.values()) == 1.0 and set(probs) == set(CLASSIFY_LABELS)


def test_build_baselines_without_training_data_says_why():
    built, notes = BL.build_baselines([], load_image=None, progress=False)
    assert [b.name for b in built] == ["constant-normal"]
    assert len(notes) == 3 and all("left out" in n for n in notes)


def test_report_text_joins_sections():
    assert BL.report_text({"findings": " Clear lungs. ", "impression": "Normal."}) == "Clear lungs. Normal."
    assert BL.report_text({"findings": None, "impression": "  "}) == "" and BL.report_text(None) == ""
