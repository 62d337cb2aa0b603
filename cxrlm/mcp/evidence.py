"""The evidence record of one MCP call, and the server's own store of them (an append-only audit and stored results).

Every call, answered or refused, becomes one record: what ran (model weights sha256, profile, prompt-template
version, engine, gate, software versions), on what (sha256 of the decoded pixels or of the text: never a DICOM tag
value), how (preprocessing: windowing, 8-bit size, the model's pixel budget), what came out (sha256 of the output
JSON), how long it took, and for a refusal its one-line reason (which may name the file given, as the command
line's errors do). The record the client gets is the stored audit row: the same JSON object.

Store layout (`cxrlm mcp --store DIR`): DIR/audit.jsonl (one record a line, every call), DIR/results/ID.json
(the output and record of each answered call: the `cxrlm://results/ID` resource, the export tool's input),
DIR/exports/ (files the export tool writes).
"""

import functools
import hashlib
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

RESULT_ID = re.compile(r"[0-9a-f]{32}")
MAX_LISTED = 100  # results named by the cxrlm://results list, newest first


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def new_record(tool: str, model_info: dict, gate: str) -> dict:
    """A call's record before it runs; the tool fills in inputs, output and timings as it goes."""
    return {"id": uuid.uuid4().hex, "time": datetime.now(UTC).isoformat(timespec="seconds"), "tool": tool,
            "status": None, "reason": None, "model": model_info, "gate": gate, "software": dict(software_versions())}


def image_evidence(study) -> dict:
    """The pixels' sha256 and preprocessing of every image the model sees: the study's views, then the prior's."""
    images = [("current", image) for image in study.images]
    images += [("prior", image) for image in (study.prior.images if study.prior else [])]
    return {"input_pixels_sha256": [hashlib.sha256(image.pixels.tobytes()).hexdigest() for _, image in images],
            "preprocessing": [_preprocessing(image) | {"study": role} for role, image in images]}


def _preprocessing(image) -> dict:
    """How stored pixels became the model's input: DICOM windowing, photometric inversion, the 8-bit size."""
    height, width = image.pixels.shape[:2]
    meta = image.metadata
    return {"windowing": meta.get("windowing"), "voi_applied": meta.get("voi_applied"), "size": [width, height],
            "photometric": meta.get("PhotometricInterpretation"), "view": image.view_position}


class EvidenceStore:
    """DIR/audit.jsonl, DIR/results/, DIR/exports/ (see the module docstring); writes are serialised."""

    def __init__(self, folder: Path):
        self.folder = folder = folder.resolve()  # the export tool answers with absolute paths
        self.audit = folder / "audit.jsonl"
        self.results = folder / "results"
        self.exports = folder / "exports"
        for path in (self.results, self.exports):
            path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, record: dict, output: dict | None = None) -> None:
        """The audit row; with an output, also the stored result that the resources and the export tool read."""
        with self._lock:
            if output is not None:
                path = self.results / f"{record['id']}.json"
                partial = path.with_suffix(".partial")  # renamed when whole: a reader never sees half a result
                partial.write_text(json.dumps({"output": output, "evidence": record}), encoding="utf-8")
                partial.replace(path)
            with self.audit.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def result(self, result_id: str) -> dict | None:
        """A stored result {output, evidence}, or None; the id is checked before it names a file."""
        if not RESULT_ID.fullmatch(result_id):
            return None
        path = self.results / f"{result_id}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def listing(self) -> list[dict]:
        """The newest stored results: id, time, tool and model, one line each."""
        paths = sorted(self.results.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_LISTED]
        rows = []
        for path in paths:
            evidence = json.loads(path.read_text(encoding="utf-8"))["evidence"]
            rows.append({"id": evidence["id"], "time": evidence["time"], "tool": evidence["tool"],
                         "uri": f"cxrlm://results/{evidence['id']}"})
        return rows


def model_info(model, weights: str | None) -> dict:
    profile = model.profile
    return {"name": model.name, "weights_sha256": weights, "profile": profile.name, "family": profile.family,
            "prompt_template_version": model.template_version, "engine": type(model.engine).__name__,
            "min_pixels": profile.min_pixels, "max_pixels": profile.max_pixels}


def weights_sha256(model: str | None) -> str | None:
    """sha256 of the checkpoint's weight files (one file: its own hash); None for a remote server."""
    from cxrlm.models import default_model_dir

    if model and model.startswith(("http://", "https://")):
        return None
    folder = Path(model) if model else default_model_dir()
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    digests = [(f.name, _file_sha256(f)) for f in files]
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{n}:{d}\n" for n, d in digests).encode()).hexdigest() if digests else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def software_versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from cxrlm import __version__

    versions = {"cxrlm": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "pydicom", "highdicom", "mcp"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
