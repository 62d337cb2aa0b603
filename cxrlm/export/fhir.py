"""Export a structured report as a FHIR R4 DiagnosticReport with contained Observations (JSON-ready dict).

Shape: one DiagnosticReport (status "preliminary", LOINC 18748-4 "Diagnostic imaging study", category Radiology)
whose `result` points at contained Observations: one per CheXpert label the model scored or the report states
(valueQuantity probability when known, else valueBoolean), one per critical-finding flag (interpretation "AA").
The impression is the `conclusion`; the Markdown report travels in `presentedForm`; the research-use disclaimer, the
model's notice (a demonstration model says so) and the warnings (sections left out, and why) are in the narrative
and in extensions (R4 DiagnosticReport has no `note`). See docs/EXPORT.md for why.

Not here: a Patient, ImagingStudy or Bundle. The output is de-identified by construction (no subject); the
caller links it to its own Patient/ImagingStudy. Validation uses fhir.resources (the `export` extra), whose
8.x line ships R4B (4.3) classes under `fhir.resources.R4B`: DiagnosticReport and Observation are unchanged from R4.
"""

from __future__ import annotations

import base64
import html
import uuid
from datetime import UTC, datetime

from cxrlm.errors import ConfigError
from cxrlm.pathologies import normalize_label
from cxrlm.structured import REGIONS, StructuredReport, as_structured
from cxrlm.types import ModelOutput, Study

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# Local code systems: CheXpert labels and critical flags have no LOINC codes. URNs say "local, not resolvable".
LABEL_SYSTEM = "urn:cxrlm:chexpert14"
CRITICAL_SYSTEM = "urn:cxrlm:critical-finding"
DISCLAIMER_EXTENSION = "urn:cxrlm:fhir:extension:disclaimer"
MODEL_NOTICE_EXTENSION = "urn:cxrlm:fhir:extension:model-notice"  # what the model says of itself (a demo model)
WARNING_EXTENSION = "urn:cxrlm:fhir:extension:warning"  # one per warning: what was left out, and why

REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
REPORT_CATEGORY = [
    {"system": LOINC, "code": "LP29684-5", "display": "Radiology"},
    {"system": V2_0074, "code": "RAD", "display": "Radiology"},
]
# certainty of a finding -> v3 ObservationInterpretation code
INTERPRETATIONS = {
    "present": ("POS", "Positive"),
    "uncertain": ("IND", "Indeterminate"),
    "absent": ("NEG", "Negative"),
    "critical": ("AA", "Critical abnormal"),
}


def to_fhir(
    report_or_output: StructuredReport | ModelOutput,
    study: Study | None = None,
    *,
    differentials_text: str | None = None,
    structured_text: str | None = None,
    output: ModelOutput | None = None,
    issued: datetime | None = None,
    validate: bool = True,
) -> dict:
    """A FHIR R4 DiagnosticReport (dict) for one model output or structured report, validated when asked.

    `output` is the model output a given StructuredReport came from: its scored labels (absent ones included)
    become Observations too. It defaults to `report_or_output` when that is a ModelOutput.
    """
    report = as_structured(report_or_output, study, differentials_text=differentials_text,
                           structured_text=structured_text)
    if output is None and isinstance(report_or_output, ModelOutput):
        output = report_or_output
    labels = _label_observations(report, output)
    observations = labels + [_critical_observation(flag) for flag in report.critical_findings]
    for index, observation in enumerate(observations, 1):
        observation["id"] = f"obs-{index}"
    resource = _diagnostic_report(report, observations, issued or datetime.now(UTC))
    if validate:
        validate_fhir(resource)
    return resource


def validate_fhir(resource: dict) -> None:
    """Parse the DiagnosticReport with fhir.resources' R4B classes; raises pydantic.ValidationError if invalid."""
    try:
        from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    except ImportError as err:
        raise ConfigError("FHIR validation needs fhir.resources: pip install 'cxrlm[export]'") from err
    DiagnosticReport.model_validate(resource)


def _diagnostic_report(report: StructuredReport, observations: list[dict], issued: datetime) -> dict:
    markdown = report.to_markdown()
    resource = {
        "resourceType": "DiagnosticReport",
        "id": str(uuid.uuid4()),
        "text": {"status": "generated", "div": _narrative(report)},
        "extension": [{"url": DISCLAIMER_EXTENSION, "valueString": report.disclaimer}]
        + ([{"url": MODEL_NOTICE_EXTENSION, "valueString": report.model_notice}] if report.model_notice else [])
        + [{"url": WARNING_EXTENSION, "valueString": warning} for warning in report.warnings],
        "contained": observations,
        "status": "preliminary",
        "category": [{"coding": REPORT_CATEGORY}],
        "code": {"coding": [REPORT_CODE], "text": "Chest radiograph report (machine-generated, preliminary)"},
        "issued": issued.isoformat(timespec="seconds"),
        "performer": [{"display": f"cxrlm model {report.model or 'unknown'} (unverified)"}],
        "result": [{"reference": f"#{obs['id']}"} for obs in observations],
        "presentedForm": [{
            "contentType": "text/markdown",
            "language": "en",
            "title": "Structured chest radiograph report",
            "data": base64.b64encode(markdown.encode()).decode("ascii"),
        }],
    }
    if report.impression:
        resource["conclusion"] = "\n".join(f"{i}. {item}" for i, item in enumerate(report.impression, 1))
    if not observations:
        del resource["contained"], resource["result"]
    return resource


def _narrative(report: StructuredReport) -> str:
    """XHTML narrative: disclaimer first, then the sections a reader needs."""
    parts = [f"<p><b>{html.escape(report.disclaimer)}</b></p>"]
    if report.model_notice:
        parts.append(f"<p><b>Model notice: {html.escape(report.model_notice)}</b></p>")
    parts += [f"<p>Technique: {html.escape(report.technique)} Comparison: {html.escape(report.comparison)}</p>"]
    for region, title in REGIONS.items():
        if report.findings.get(region):
            parts.append(f"<p>{title}: {html.escape(' '.join(report.findings[region]))}</p>")
    if report.impression:
        items = "".join(f"<li>{html.escape(item)}</li>" for item in report.impression)
        parts.append(f"<p>Impression:</p><ol>{items}</ol>")
    if report.warnings:
        items = "".join(f"<li>{html.escape(warning)}</li>" for warning in report.warnings)
        parts.append(f"<p>Warnings:</p><ul>{items}</ul>")
    return '<div xmlns="http://www.w3.org/1999/xhtml">' + "".join(parts) + "</div>"


def _label_observations(report: StructuredReport, output: ModelOutput | None) -> list[dict]:
    """One Observation per label: the model's scored labels (present or absent), then text-only findings."""
    rows: dict[str, tuple[str, float | None, str | None]] = {}
    for label in output.labels if output else []:
        name = normalize_label(label.name)
        if name and name != "No Finding":
            rows[name] = ("present" if label.present else "absent", label.probability, None)
    for finding in report.positive_findings:
        certainty, probability, _ = rows.get(finding.label, (finding.certainty, None, None))
        rows[finding.label] = (certainty, probability if probability is not None else finding.probability,
                               finding.evidence)
    return [_observation(name, *row, model=report.model) for name, row in rows.items()]


def _observation(name: str, certainty: str, probability: float | None, evidence: str | None, model: str) -> dict:
    code, display = INTERPRETATIONS[certainty]
    observation = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [{"system": LABEL_SYSTEM, "code": name, "display": name}], "text": name},
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}],
        "method": {"text": f"cxrlm model {model or 'unknown'}"},
    }
    if probability is not None:
        observation["valueQuantity"] = {"value": round(float(probability), 4), "unit": "probability",
                                        "system": UCUM, "code": "1"}
    else:
        observation["valueBoolean"] = certainty != "absent"
    if evidence:
        observation["note"] = [{"text": f"Report text: {evidence}"}]
    return observation


def _critical_observation(flag) -> dict:
    code, display = INTERPRETATIONS["critical"]
    observation = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [{"system": CRITICAL_SYSTEM, "code": flag.name, "display": flag.display}],
                 "text": f"Critical finding: {flag.display}"},
        "valueBoolean": True,
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}],
        "note": [{"text": f"{flag.certainty}; raised by {flag.source}" + (f": {flag.evidence}" if flag.evidence
                                                                          else "")}],
    }
    return observation
