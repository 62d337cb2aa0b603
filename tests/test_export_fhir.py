"""FHIR export: a DiagnosticReport with contained Observations that fhir.resources' R4B classes accept."""

import base64
import json
from datetime import UTC, datetime

import pytest

pytest.importorskip("fhir.resources")

from pydantic import ValidationError

from cxrlm.export.fhir import LABEL_SYSTEM, REPORT_CODE, to_fhir, validate_fhir
from cxrlm.structured import build_structured_report
from cxrlm.types import Box, Label, ModelOutput


def _output(**kw) -> ModelOutput:
    defaults = {
        "task": "report", "model": "test-model", "raw_text": "",
        "findings": "No pneumothorax. Large right pleural effusion with <b>adjacent</b> atelectasis.",
        "impression": "1. Large right pleural effusion.\n2. No pneumothorax.",
        "labels": [Label("Pleural Effusion", 0.91), Label("Pneumothorax", 0.04, present=False),
                Label("Cardiomegaly", None)],
        "boxes": [Box.from_norm("Pleural Effusion", (0.5, 0.5, 0.9, 0.9), (200, 200))],
        "image_size": (200, 200),
    }
    return ModelOutput(**(defaults | kw))


def _contained(resource: dict) -> dict[str, dict]:
    return {obs["code"]["coding"][0]["code"]: obs for obs in resource["contained"]}


def test_diagnostic_report_validates_and_is_preliminary():
    resource = to_fhir(_output())
    validate_fhir(resource)
    assert resource["resourceType"] == "DiagnosticReport"
    assert resource["status"] == "preliminary"
    assert resource["code"]["coding"] == [REPORT_CODE]
    assert resource["conclusion"] == "1. Large right pleural effusion.\n2. No pneumothorax."
    assert "subject" not in resource  # de-identified: the caller links its own Patient


def test_each_label_is_a_contained_observation_with_probability_or_boolean():
    resource = to_fhir(_output())
    obs = _contained(resource)
    assert {ref["reference"] for ref in resource["result"]} == {f"#{o['id']}" for o in resource["contained"]}
    effusion = obs["Pleural Effusion"]
    assert effusion["code"]["coding"][0]["system"] == LABEL_SYSTEM
    assert effusion["valueQuantity"]["value"] == pytest.approx(0.91)
    assert effusion["interpretation"][0]["coding"][0]["code"] == "POS"
    assert obs["Pneumothorax"]["interpretation"][0]["coding"][0]["code"] == "NEG"
    assert obs["Cardiomegaly"]["valueBoolean"] is True
    assert obs["Atelectasis"]["valueBoolean"] is True  # from the text only, via the labeler
    assert "pneumothorax" not in obs  # negated in the text: no critical flag
    assert obs["large_pleural_effusion"]["interpretation"][0]["coding"][0]["code"] == "AA"


def test_disclaimer_in_extension_and_narrative_and_html_is_escaped():
    resource = to_fhir(_output())
    disclaimer = _output().disclaimer
    assert resource["extension"][0]["valueString"] == disclaimer
    assert disclaimer in resource["text"]["div"]
    assert "&lt;b&gt;adjacent&lt;/b&gt;" in resource["text"]["div"]


def test_presented_form_carries_the_markdown_report():
    resource = to_fhir(_output())
    markdown = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
    assert markdown.startswith("> **Research and education use only.")


def test_structured_report_input_with_output_gives_same_observations():
    output = _output()
    issued = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    from_output = to_fhir(output, issued=issued)
    from_report = to_fhir(build_structured_report(output), output=output, issued=issued)
    assert _contained(from_output).keys() == _contained(from_report).keys()
    assert from_report["issued"] == "2026-01-02T03:04:05+00:00"


def test_empty_output_still_validates():
    resource = to_fhir(ModelOutput(task="reason", model="m", raw_text=""))
    assert "contained" not in resource and "conclusion" not in resource
    json.dumps(resource)


def test_validation_catches_a_broken_resource():
    resource = to_fhir(_output())
    del resource["code"]
    with pytest.raises(ValidationError):
        validate_fhir(resource)
    broken = to_fhir(_output())
    broken["contained"][0]["valueQuantity"]["value"] = "high"
    with pytest.raises(ValidationError):
        validate_fhir(broken)
