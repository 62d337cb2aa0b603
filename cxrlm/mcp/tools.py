"""What each MCP tool does, with every argument bounded before any file is decoded or the model runs.

A call returns a CallToolResult whose structured content is `{"output", "evidence", "notice"}` when answered and
`{"error", "evidence", "notice"}` (is_error) when refused; `evidence` is the row stored in the audit (evidence.py).
"""

import threading
import time
from pathlib import Path

from cxrlm.errors import InputError
from cxrlm.limits import MAX_TEXT_CHARS
from cxrlm.mcp.evidence import RESULT_ID, image_evidence, new_record, sha256_json

MAX_FILE_BYTES = 512 * 1024 * 1024  # one image file (a large uncompressed DX is ~50 MB)
MAX_PATH_CHARS = 4096
MAX_PHRASE_CHARS = 200
MODEL_TOOLS = ("report", "classify", "ground", "compare")  # the tools whose stored results can be exported
EXPORT_FORMATS = ("fhir", "sr")


class Tools:
    """One model, one evidence store; model calls run one at a time (the hf engine is not re-entrant)."""

    def __init__(self, model, root: Path, store, gate: str, model_info: dict):
        self.model, self.root, self.store, self.gate, self.model_info = model, root, store, gate, model_info
        self._model_lock = threading.Lock()

    def call(self, tool: str, work, *args):
        """Run `work(record, *args)` -> output dict; store the record (answered or refused) and answer with it."""
        from mcp_types import CallToolResult, TextContent

        from cxrlm import DISCLAIMER
        from cxrlm.errors import CxrlmError, one_line

        record = new_record(tool, self.model_info, self.gate)
        record["timings_s"] = {}
        began = time.perf_counter()
        output = None
        try:
            output = work(record, *args)
            record["status"], record["output_sha256"] = "answered", sha256_json(output)
        except CxrlmError as err:
            record["status"], record["reason"] = "refused", one_line(str(err))
        except Exception as err:  # a bug: recorded too, without its text (which may quote the input)
            record["status"], record["reason"] = "failed", f"unexpected {type(err).__name__} (see the server's log)"
            _log_bug(tool)
        record["timings_s"]["total_s"] = round(time.perf_counter() - began, 4)
        self.store.append(record, output)
        if output is None:
            answer = {"error": record["reason"], "evidence": record, "notice": DISCLAIMER}
            return CallToolResult(content=[TextContent(type="text", text=record["reason"])], structured_content=answer,
                                  is_error=True)
        answer = {"output": output, "evidence": record, "notice": DISCLAIMER}
        return CallToolResult(content=[TextContent(type="text", text=_summary(tool, output, record["id"]))],
                              structured_content=answer)

    # The tools' work: each gets the record to fill in and returns the output stored under the record's id.

    def predict(self, record: dict, task: str, image_path: str, phrase: str | None = None) -> dict:
        if phrase is not None:
            _check_text("phrase", phrase, MAX_PHRASE_CHARS)
        return self._run_model(record, task, self._study(record, self._checked_path("image_path", image_path)), phrase)

    def compare(self, record: dict, image_path: str, prior_image_path: str, prior_report: str) -> dict:
        """The model's report of the current study read against the prior; only for models trained with priors."""
        profile = self.model.profile
        if not profile.priors:
            raise InputError(f"{self.model.name} (profile {profile.name}) was not trained to compare with a prior "
                             "study: use report on the current study, or serve a model whose profile has priors")
        if len(prior_report) > MAX_TEXT_CHARS:  # optional: empty means no prior report
            raise InputError(f"prior_report has more than {MAX_TEXT_CHARS:,} characters")
        current = self._checked_path("image_path", image_path)
        study = self._study(record, current, self._checked_path("prior_image_path", prior_image_path))
        study.prior_report = prior_report.strip() or None
        return self._run_model(record, "report", study)

    def label(self, record: dict, report_text: str) -> dict:
        from cxrlm.data import labeler

        _check_text("report_text", report_text, MAX_TEXT_CHARS)
        record["input_text_sha256"] = _sha256(report_text.encode("utf-8"))
        labels = labeler.label_report(report_text)
        return {"labeler": "cxrlm rule-based (cxrlm label)", "vocab": "chexpert14",
                "labels": {name: labeler.STATUS_NAMES[value] for name, value in labels.items()}}

    def export(self, record: dict, result_id: str, fmt: str, source_path: str) -> dict:
        """A stored model result as FHIR R4 JSON (returned and written) or DICOM SR (written; its path returned)."""
        from cxrlm.export import export
        from cxrlm.serve.exports import output_from_dict

        if fmt not in EXPORT_FORMATS:
            raise InputError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        stored = self.store.result(result_id) if RESULT_ID.fullmatch(result_id) else None
        if stored is None or stored["evidence"]["tool"] not in MODEL_TOOLS:
            raise InputError(f"result_id names no stored {'/'.join(MODEL_TOOLS)} result: list cxrlm://results")
        record["result_id"] = result_id
        source = self._export_source(stored["evidence"], source_path) if source_path else None
        document = export(output_from_dict(stored["output"]), fmt, source=source)
        path = self.store.exports / f"{record['id']}{'.fhir.json' if fmt == 'fhir' else '.sr.dcm'}"
        path.write_bytes(document if isinstance(document, bytes) else document.encode("utf-8"))
        out = {"format": fmt, "result_id": result_id, "path": str(path), "file_sha256": _sha256(path.read_bytes())}
        if fmt == "fhir":
            import json

            out["document"] = json.loads(document)
        return out

    def _export_source(self, evidence: dict, source_path: str) -> Path:
        """The DICOM the SR references (for boxes as image regions): it must be the image the result was made of."""
        from cxrlm.io import load_study

        path = self._checked_path("source_path", source_path)
        pixels = image_evidence(load_study([path]))["input_pixels_sha256"][0]
        if pixels != evidence["input_pixels_sha256"][0]:
            raise InputError("source_path is not the image that result was made from: give that DICOM file")
        return path

    def _study(self, record: dict, path: Path, prior_path: Path | None = None):
        """Checked files, decoded and gated; the record gets their pixel hashes first, so a gate refusal has them."""
        from cxrlm.gate import check_study, check_views
        from cxrlm.io import load_study

        began = time.perf_counter()
        study = load_study([path])
        study.prior = load_study([prior_path]) if prior_path else None
        record.update(image_evidence(study))
        check_study(study, self.gate)
        check_views(study, self.model.profile.views, self.model.name, self.gate)
        record["timings_s"]["read_s"] = round(time.perf_counter() - began, 4)
        return study

    def _run_model(self, record: dict, task: str, study, phrase: str | None = None) -> dict:
        began = time.perf_counter()
        with self._model_lock:
            output = self.model.predict(study, task, phrase=phrase).to_dict()
        record["timings_s"]["model_s"] = round(time.perf_counter() - began, 4)
        return output

    def _checked_path(self, name: str, text: str) -> Path:
        """An existing file under --root, of bounded size, checked before it is opened (its name is not quoted)."""
        if not text or len(text) > MAX_PATH_CHARS:
            raise InputError(f"{name} must have 1 to {MAX_PATH_CHARS} characters")
        path = (self.root / text).resolve()
        if not path.is_relative_to(self.root):
            raise InputError(f"{name} is outside the server's --root folder: give a path under it")
        if not path.is_file():
            raise InputError(f"{name} is not a file under the server's --root folder")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB")
        return path


def _check_text(name: str, text: str, limit: int) -> None:
    if not 0 < len(text.strip()) <= limit:
        raise InputError(f"{name} must have 1 to {limit:,} characters")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _log_bug(tool: str) -> None:
    import logging

    logging.getLogger("cxrlm.mcp").exception("tool %s failed", tool)


def _summary(tool: str, output: dict, result_id: str) -> str:
    """The text block for clients that read no structured content: the answer's gist and where it is stored."""
    if tool == "label":
        gist = ", ".join(f"{name}: {status}" for name, status in output["labels"].items() if status != "not mentioned")
    elif tool == "export":
        gist = f"{output['format']} written to {output['path']}"
    elif tool == "classify":
        top = sorted(output["probabilities"].items(), key=lambda item: -item[1])[:5]
        gist = ", ".join(f"{name}: {p:.2f}" for name, p in top)
    else:
        gist = output.get("impression") or output.get("answer") or output.get("raw_text", "")[:500]
    return f"{gist or '(nothing found)'}\nresult: cxrlm://results/{result_id}"

