"""The structured report: regions, comparison, critical flags (negation-aware), box links, differentials, schema."""

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrlm.structured import (
    NO_COMPARISON,
    StructuredReport,
    as_structured,
    build_structured_report,
    critical_flags,
    impression_items,
    parse_differential,
    parse_structured_text,
    region_of,
    rule_status,
    split_sentences,
    validate_structured,
)
from cxrlm.types import Box, Label, ModelOutput, Study, XrayImage

SIZE = (240, 300)


def _output(findings=None, impression=None, boxes=(), labels=(), **kw) -> ModelOutput:
    return ModelOutput(task="report", model="test-model", raw_text="", findings=findings, impression=impression,
                       boxes=list(boxes), labels=list(labels), image_size=SIZE, **kw)


def _image(view):
    return XrayImage(pixels=np.zeros((4, 4), np.uint8), view_position=view)


def _flags(text: str) -> set[str]:
    return {flag.name for flag in build_structured_report(_output(findings=text)).critical_findings}


# --- critical findings --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "No pneumothorax.",
    "There is no evidence of pneumothorax.",
    "No pneumothorax or pleural effusion.",
    "Pneumothorax has resolved.",
    "The lungs are clear without pneumothorax.",
])
def test_negated_pneumothorax_raises_no_flag(text):
    assert "pneumothorax" not in _flags(text)


@pytest.mark.parametrize("text", [
    "Large right pneumothorax.",
    "There is a small left apical pneumothorax.",
    "No effusion, but there is a right pneumothorax.",
])
def test_pneumothorax_raises_flag(text):
    report = build_structured_report(_output(findings=text))
    flag = next(f for f in report.critical_findings if f.name == "pneumothorax")
    assert flag.certainty == "present" and flag.source == "labeler" and flag.evidence


def test_uncertain_pneumothorax_is_flagged_as_uncertain():
    flag = build_structured_report(_output(findings="Possible small pneumothorax.")).critical_findings[0]
    assert (flag.name, flag.certainty) == ("pneumothorax", "uncertain")


@pytest.mark.parametrize(("text", "name"), [
    ("Findings concerning for tension pneumothorax with mediastinal shift.", "tension_pneumothorax"),
    ("The endotracheal tube is malpositioned in the right mainstem bronchus.", "malpositioned_device"),
    ("Enteric tube coiled in the esophagus.", "malpositioned_device"),
    ("Free air under the right hemidiaphragm.", "pneumoperitoneum"),
    ("Large left pleural effusion.", "large_pleural_effusion"),
    ("No change in large left pleural effusion.", "large_pleural_effusion"),  # "no change" is not a negation
    ("No pneumothorax, large right pleural effusion.", "large_pleural_effusion"),
    ("Pneumomediastinum is present.", "pneumomediastinum"),
])
def test_rule_terms_raise_their_flag(text, name):
    assert name in _flags(text)


@pytest.mark.parametrize("text", [
    "No free air under the diaphragm.",
    "No evidence of pneumoperitoneum.",
    "The tube is not malpositioned.",
    "No large pleural effusion.",
    "No pneumothorax, effusion, or free air.",
    "Small left pleural effusion.",
    "Pneumoperitoneum has been excluded.",
])
def test_negated_or_mild_rule_terms_raise_no_flag(text):
    assert _flags(text) == set()


def test_rule_status_is_clause_scoped():
    assert rule_status("free air", "No effusion; free air under the diaphragm.") == "present"
    assert rule_status("free air", "Possible free air.") == "uncertain"
    assert rule_status("free air", "Lungs are clear.") is None


def test_model_label_alone_raises_pneumothorax_flag():
    output = _output(labels=[Label("Pneumothorax", 0.9)])
    flags = critical_flags([], output)
    assert [(f.name, f.source) for f in flags] == [("pneumothorax", "model_label")]
    assert critical_flags([], _output(labels=[Label("Pneumothorax", 0.1, present=False)])) == []


# --- boxes ----------------------------------------------------------------------------------------------------------

def test_positive_findings_link_boxes_by_normalized_label():
    boxes = [
        Box.from_norm("right pleural effusion", (0.1, 0.5, 0.4, 0.9), SIZE),
        Box.from_norm("Effusion", (0.6, 0.5, 0.9, 0.9), SIZE),
        Box.from_norm("Cardiomegally", (0.3, 0.4, 0.7, 0.8), SIZE),
        Box.from_norm("Nodule", (0.1, 0.1, 0.2, 0.2), SIZE),
    ]
    output = _output(findings="Bilateral pleural effusions. The heart is enlarged. No pneumothorax.", boxes=boxes,
                     labels=[Label("Pleural Effusion", 0.83), Label("Cardiomegaly", 0.7)])
    report = build_structured_report(output)
    found = {f.label: f for f in report.positive_findings}
    assert found["Pleural Effusion"].boxes == [0, 1]
    assert found["Cardiomegaly"].boxes == [2]
    assert found["Pleural Effusion"].probability == pytest.approx(0.83)
    assert "Pneumothorax" not in found
    assert report.warnings == ["box 3 ('Nodule') matches no positive finding"]


def test_labels_without_text_still_become_positive_findings():
    report = build_structured_report(_output(labels=[Label("Support Devices", None), Label("No Finding", None)]))
    assert [(f.label, f.region) for f in report.positive_findings] == [("Support Devices", "lines_tubes")]


# --- sections -------------------------------------------------------------------------------------------------------

def test_no_prior_means_none_available_and_prior_report_is_acknowledged():
    assert build_structured_report(_output(findings="Lungs are clear.")).comparison == NO_COMPARISON
    study = Study(images=[_image("PA")])
    assert build_structured_report(_output(), study).comparison == NO_COMPARISON
    with_report = Study(images=[_image("PA")], prior_report="Prior: clear lungs.")
    assert "provided" in build_structured_report(_output(), with_report).comparison
    assert build_structured_report(_output(), with_report).comparison != NO_COMPARISON


def test_comparison_is_never_taken_from_model_text():
    text = "Comparison: Chest radiograph from 2019.\nFindings: Lungs are clear.\nImpression: Normal."
    report = build_structured_report(_output(), structured_text=text)
    assert report.comparison == NO_COMPARISON
    assert report.findings["lungs"] == ["Lungs are clear."]


@pytest.mark.parametrize(("views", "expected"), [
    (["PA", "LATERAL"], "PA and lateral views of the chest."),
    (["AP"], "AP view of the chest."),
    ([None], "Single view of the chest; view position not recorded."),
])
def test_technique_from_study_views(views, expected):
    study = Study(images=[_image(v) for v in views])
    assert build_structured_report(_output(), study).technique == expected


def test_findings_are_assigned_to_regions_by_keyword():
    text = ("Endotracheal tube tip 4.5 cm above the carina. The lungs are clear. No pleural effusion or "
            "pneumothorax. Heart size is normal. No acute osseous abnormality. Free air is absent.")
    report = build_structured_report(_output(findings=text))
    assert report.findings["lines_tubes"] == ["Endotracheal tube tip 4.5 cm above the carina."]
    assert report.findings["lungs"] == ["The lungs are clear."]
    assert report.findings["pleura"] == ["No pleural effusion or pneumothorax."]
    assert report.findings["heart_mediastinum"] == ["Heart size is normal."]
    assert report.findings["bones_soft_tissues"] == ["No acute osseous abnormality."]
    assert report.findings["other"] == ["Free air is absent."]


def test_region_of_picks_earliest_keyword():
    assert region_of("Left chest tube with a small residual pneumothorax.") == "lines_tubes"
    assert region_of("Small pneumothorax near the left chest tube.") == "pleura"


def test_impression_is_numbered_list():
    assert impression_items("1. Small effusion.\n2. No pneumothorax.") == ["Small effusion.", "No pneumothorax."]
    assert impression_items("Small effusion. No pneumothorax.") == ["Small effusion.", "No pneumothorax."]
    report = build_structured_report(_output(impression="1. Small effusion.\n2. Edema."))
    assert "1. Small effusion.\n2. Edema." in report.to_markdown()


def test_split_sentences_keeps_decimals():
    assert split_sentences("Tube tip 4.5 cm above carina. Lungs clear.") == ["Tube tip 4.5 cm above carina.",
                                                                          "Lungs clear."]


@pytest.mark.parametrize(("item", "expected"), [
    ("Pneumonia (likely)", ("Pneumonia", "high")),
    ("Less likely: pulmonary edema", ("pulmonary edema", "low")),
    ("Possible aspiration", ("aspiration", "medium")),
    ("Atelectasis is unlikely", ("Atelectasis", "low")),
    ("Lung cancer", ("Lung cancer", None)),
])
def test_differential_likelihood(item, expected):
    d = parse_differential(item)
    assert (d.diagnosis, d.likelihood) == expected


def test_differentials_from_follow_up_answer():
    answer = "<answer>1. Pneumonia - likely\n2. Atelectasis - possible\n3. Edema - less likely</answer>"
    report = build_structured_report(_output(), differentials_text=answer)
    assert [(d.diagnosis, d.likelihood) for d in report.differentials] == [
        ("Pneumonia", "high"), ("Atelectasis", "medium"), ("Edema", "low")]


def test_structured_text_fills_missing_sections_and_recommendations():
    text = ("Technique: PA view.\nFindings: Right lower lobe consolidation.\nImpression: Pneumonia.\n"
            "Recommendations: Follow-up radiograph in 6 weeks.")
    sections = parse_structured_text(text)
    assert sections["impression"] == "Pneumonia."
    report = build_structured_report(_output(), structured_text=text)
    assert report.impression == ["Pneumonia."]
    assert report.recommendations == ["Follow-up radiograph in 6 weeks."]
    assert {f.label for f in report.positive_findings} >= {"Consolidation"}


def test_empty_output_is_valid_and_invents_nothing():
    report = build_structured_report(_output())
    assert report.impression == [] and report.positive_findings == [] and report.critical_findings == []
    assert all(sentences == [] for sentences in report.findings.values())
    assert "Not described." in report.to_markdown()


def test_markdown_starts_with_research_notice():
    markdown = build_structured_report(_output(findings="Large right pneumothorax.")).to_markdown()
    assert markdown.startswith("> **Research and education use only.")
    assert "## Critical findings" in markdown and "Pneumothorax" in markdown


def test_to_dict_validates_and_schema_rejects_bad_data():
    data = build_structured_report(_output(findings="Large right pneumothorax.")).to_dict()
    validate_structured(data)
    bad = dict(data, critical_findings=[{"name": "pneumothorax", "display": "x", "certainty": "maybe",
                                         "source": "rule", "evidence": None}])
    with pytest.raises(jsonschema.ValidationError):
        validate_structured(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate_structured({k: v for k, v in data.items() if k != "comparison"})


def test_as_structured_accepts_both_and_rejects_others():
    report = build_structured_report(_output())
    assert as_structured(report) is report
    assert isinstance(as_structured(_output()), StructuredReport)
    with pytest.raises(TypeError):
        as_structured({"findings": "x"})



@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120), st.text(max_size=80), st.text(max_size=80))
def test_any_model_text_gives_a_valid_structured_report(findings, impression, differentials):
    from cxrlm.structured import build_structured_report
    from cxrlm.types import ModelOutput

    output = ModelOutput(task="report", model="m", raw_text=findings, findings=findings, impression=impression)
    build_structured_report(output, differentials_text=differentials)  # validates against its schema
