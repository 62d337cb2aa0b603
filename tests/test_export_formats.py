"""The export registry: every format dispatches, text formats are str, unknown formats fail with one line."""

import json

import pytest

from cxrlm.errors import ConfigError
from cxrlm.export import FORMATS, export
from cxrlm.structured import build_structured_report, validate_structured
from cxrlm.types import Label, ModelOutput


def _output() -> ModelOutput:
    return ModelOutput(task="report", model="test-model", raw_text="", findings="Large left pneumothorax.",
                       impression="Large left pneumothorax.", labels=[Label("Pneumothorax", 0.97)])


def test_registry_names_match_keys_and_text_formats_return_str():
    assert set(FORMATS) == {"json", "md", "fhir", "sr"}
    for name, spec in FORMATS.items():
        assert spec.name == name and spec.suffix.startswith(".")
        assert spec.binary == (name == "sr")


def test_json_export_is_the_validated_structured_report():
    data = json.loads(export(_output(), "json"))
    validate_structured(data)
    assert data["critical_findings"][0]["name"] == "pneumothorax"


def test_md_export_starts_with_notice_and_accepts_a_structured_report():
    report = build_structured_report(_output())
    assert export(report, "MD").startswith("> **Research")


def test_fhir_export_is_json_text():
    pytest.importorskip("fhir.resources")
    resource = json.loads(export(_output(), "fhir"))
    assert resource["resourceType"] == "DiagnosticReport" and resource["status"] == "preliminary"


def test_unknown_format_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown export format 'pdf'; choose one of: json, md, fhir, sr"):
        export(_output(), "pdf")
