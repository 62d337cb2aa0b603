"""Stored results out again: the JSON schema as is, FHIR and DICOM SR through cxrlm.export when installed.

The writers live in cxrlm.export (FHIR R4, DICOM SR, Markdown); when one, or the library it needs, is missing
the API answers 501 with a line saying so, rather than a half-made document. Not here: HTTP status handling (app.py).
"""

from __future__ import annotations

from cxrlm.types import Box, Label, ModelOutput, Timings

# API format name -> cxrlm.export format name. "json" is the stored ModelOutput itself (the project schema).
DELEGATED = {"md": "md", "fhir": "fhir", "sr": "sr", "dicom-sr": "sr"}
FORMATS = ("json", *DELEGATED)


class ExportUnavailable(Exception):
    """The exporter for a format is not installed in this build."""


def output_from_dict(data: dict) -> ModelOutput:
    """Rebuild the ModelOutput that `to_dict()` produced (the inverse of the stored JSON)."""
    timings = {k: v for k, v in (data.get("timings") or {}).items() if k != "tokens_per_s"}
    size = data.get("image_size")
    return ModelOutput(
        task=data["task"], model=data["model"], raw_text=data.get("raw_text", ""), reasoning=data.get("reasoning"),
        labels=[Label(**label) for label in data.get("labels", [])],
        probabilities=dict(data.get("probabilities", {})), findings=data.get("findings"),
        impression=data.get("impression"),
        boxes=[Box(b["label"], tuple(b["xyxy"]), tuple(b["xyxy_norm"]), b.get("score")) for b in data.get("boxes", [])],
        differentials=list(data.get("differentials", [])), answer=data.get("answer"), timings=Timings(**timings),
        warnings=list(data.get("warnings", [])), image_size=tuple(size) if size else None,
        model_notice=data.get("model_notice"),
    )


def export(data: dict, fmt: str) -> tuple[bytes | str | dict, str, str]:
    """(document, media type, file suffix) for a stored output; raises ExportUnavailable when not installed."""
    if fmt == "json":
        return data, "application/json", ".json"
    try:
        from cxrlm.export import FORMATS as WRITERS
        from cxrlm.export import export as write

        spec = WRITERS[DELEGATED[fmt]]
        return write(output_from_dict(data), spec.name), spec.media_type, spec.suffix
    except (ImportError, KeyError) as err:  # the exporter, or the library it needs, is not installed
        raise ExportUnavailable(f"{fmt} export is not available in this install ({err}): install cxrlm[export], "
                                "or use format=json") from None
