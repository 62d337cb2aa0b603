"""Export one model output as a structured report in a chosen format: json, md, fhir (R4 JSON) or sr (DICOM SR).

`export()` is what the CLI (`cxrlm report ... --export FORMAT --out FILE`) and the server call. Formats are a
registry of data (name -> writer, media type, file suffix); the FHIR and SR writers import their libraries lazily
(the `export` extra), so json and md work with the core install alone.

Not here: the report rules (cxrlm.structured) or any file writing; callers write the returned bytes/str.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cxrlm.errors import ConfigError
from cxrlm.structured import StructuredReport, as_structured
from cxrlm.types import ModelOutput, Study


@dataclass(frozen=True)
class ExportFormat:
    name: str
    media_type: str
    suffix: str
    binary: bool
    write: Callable[..., bytes | str]
    description: str


def _json(report: StructuredReport, **_) -> str:
    return report.to_json()


def _markdown(report: StructuredReport, **_) -> str:
    return report.to_markdown()


def _fhir(report: StructuredReport, *, output: ModelOutput | None = None, **_) -> str:
    from cxrlm.export.fhir import to_fhir

    # The output (when given) adds the model's absent labels as negative Observations.
    return json.dumps(to_fhir(report, output=output), indent=2, ensure_ascii=False)


def _sr(report: StructuredReport, *, source: str | Path | None = None, **_) -> bytes:
    from cxrlm.export.dicom_sr import sr_bytes, to_dicom_sr

    return sr_bytes(to_dicom_sr(report, source))


FORMATS = {
    f.name: f
    for f in (
        ExportFormat("json", "application/json", ".json", False, _json, "structured report as JSON"),
        ExportFormat("md", "text/markdown", ".md", False, _markdown, "structured report as Markdown"),
        ExportFormat("fhir", "application/fhir+json", ".fhir.json", False, _fhir,
                     "FHIR R4 DiagnosticReport with contained Observations"),
        ExportFormat("sr", "application/dicom", ".dcm", True, _sr,
                     "DICOM Comprehensive SR (TID 1500); boxes as ROIs when --source is a DICOM"),
    )
}


def export(
    output: ModelOutput | StructuredReport,
    fmt: str,
    study: Study | None = None,
    source: str | Path | None = None,
    *,
    differentials_text: str | None = None,
    structured_text: str | None = None,
) -> bytes | str:
    """The report of `output` in format `fmt` (see FORMATS): str for text formats, bytes for sr."""
    spec = FORMATS.get(fmt.lower())
    if spec is None:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    report = as_structured(output, study, differentials_text=differentials_text, structured_text=structured_text)
    return spec.write(report, output=output if isinstance(output, ModelOutput) else None, source=source)
