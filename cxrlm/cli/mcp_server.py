"""`cxrlm mcp`: the model as tools for clinical agents, over the Model Context Protocol (stdio, official `mcp` SDK).

Tools: report, classify, ground; each takes the path of an image file on the server's disk (under --root, size
bounded). Every call returns, and appends to a JSONL audit file, an evidence record of what was run: model weights
sha256, profile and prompt-template version, preprocessing, input pixel sha256 (never identifiers: DICOM
identifying tags are never read), output sha256, timings, software versions. Research use only.
"""

import hashlib
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 512 * 1024 * 1024  # one image file (a large uncompressed DX is ~50 MB)
MAX_PATH_CHARS = 4096
MAX_PHRASE_CHARS = 200


def register(subparsers) -> None:
    from cxrlm.cli.gate import add_gate_option
    from cxrlm.cli.model_options import add_model_options

    parser = subparsers.add_parser("mcp", help="serve report, classify and ground as MCP tools (stdio)")
    add_model_options(parser)
    add_gate_option(parser)
    parser.add_argument("--root", default=".", help="the folder whose images the tools may read (default: here)")
    parser.add_argument("--audit", default="cxrlm-mcp-audit.jsonl", metavar="FILE",
                        help="where each call's evidence record is appended (JSON lines)")
    parser.set_defaults(run=run_mcp)


def run_mcp(args) -> int:
    from cxrlm.cli.model_options import load_model_from_args
    from cxrlm.errors import ConfigError

    root = Path(args.root).resolve()
    if not root.is_dir():
        raise ConfigError(f"--root {args.root} is not a folder: give the folder the tools may read images from")
    model = load_model_from_args(args)
    tools = Tools(model, root, Path(args.audit), args.gate, weights_sha256(args.model))
    build_server(tools).run("stdio")
    return 0


def build_server(tools: "Tools"):
    from mcp.server.mcpserver import MCPServer

    from cxrlm import DISCLAIMER

    server = MCPServer("cxrlm", instructions=f"Chest X-ray models as tools. {DISCLAIMER}")

    @server.tool(structured_output=True)
    def report(image_path: str) -> dict[str, Any]:
        """Reasoning, CheXpert-14 labels, findings and impression for one chest radiograph (PNG, JPEG, DICOM)."""
        return tools.call("report", image_path)

    @server.tool(structured_output=True)
    def classify(image_path: str) -> dict[str, Any]:
        """A probability for each CheXpert-14 and NIH-14 label for one chest radiograph."""
        return tools.call("classify", image_path)

    @server.tool(structured_output=True)
    def ground(image_path: str, phrase: str) -> dict[str, Any]:
        """Bounding boxes (original-image pixels, with scores) for a phrase such as 'right lung'."""
        return tools.call("ground", image_path, phrase)

    return server


class Tools:
    """One model, one audit file; calls run one at a time (the hf engine is not re-entrant)."""

    def __init__(self, model, root: Path, audit: Path, gate: str, weights: str | None):
        self.model, self.root, self.audit, self.gate, self.weights = model, root, audit, gate, weights
        self._lock = threading.Lock()

    def call(self, task: str, image_path: str, phrase: str | None = None) -> dict:
        """The tool's answer; a user error (bad path, unreadable file, gate refusal) is the tool's one-line error."""
        from mcp.server.mcpserver.exceptions import ToolError

        from cxrlm.errors import CxrlmError, one_line

        try:
            return self._answer(task, image_path, phrase)
        except CxrlmError as err:
            raise ToolError(one_line(str(err))) from None

    def _answer(self, task: str, image_path: str, phrase: str | None) -> dict:
        from cxrlm import DISCLAIMER
        from cxrlm.errors import InputError
        from cxrlm.gate import check_study, check_views
        from cxrlm.io import load_study

        began = time.perf_counter()
        path = self._checked_path(image_path)
        if phrase is not None and not 0 < len(phrase.strip()) <= MAX_PHRASE_CHARS:
            raise InputError(f"phrase must have 1 to {MAX_PHRASE_CHARS} characters")
        study = load_study([path])
        check_study(study, self.gate)
        check_views(study, self.model.profile.views, self.model.name, self.gate)
        loaded = time.perf_counter()
        with self._lock:
            out = self.model.predict(study, task, phrase=phrase)
        output = out.to_dict()
        evidence = self._evidence(task, study, output, {"read_s": loaded - began,
                                                        "model_s": time.perf_counter() - loaded})
        self._store(evidence)
        return {"output": output, "evidence": evidence, "notice": DISCLAIMER}

    def _checked_path(self, text: str) -> Path:
        """An existing file under --root, of bounded size, checked before it is opened."""
        from cxrlm.errors import InputError

        if len(text) > MAX_PATH_CHARS:
            raise InputError(f"image_path has more than {MAX_PATH_CHARS} characters")
        path = (self.root / text).resolve()
        if not path.is_relative_to(self.root):
            raise InputError(f"image_path is outside the server's --root folder {self.root}")
        if not path.is_file():
            raise InputError(f"image_path {text} is not a file under {self.root}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"image_path {text} is larger than {MAX_FILE_BYTES // 2**20} MB")
        return path

    def _evidence(self, task: str, study, output: dict, timings: dict) -> dict:
        model = self.model
        return {
            "id": uuid.uuid4().hex,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "tool": task,
            "model": {"name": model.name, "weights_sha256": self.weights, "profile": model.profile.name,
                      "family": model.profile.family, "prompt_template_version": model.template_version,
                      "engine": type(model.engine).__name__},
            "preprocessing": [_preprocessing(image, model.profile) for image in study.images],
            "input_pixels_sha256": [hashlib.sha256(image.pixels.tobytes()).hexdigest() for image in study.images],
            "output_sha256": hashlib.sha256(json.dumps(output, sort_keys=True).encode()).hexdigest(),
            "timings_s": {name: round(seconds, 4) for name, seconds in timings.items()},
            "software": software_versions(),
            "gate": self.gate,
        }

    def _store(self, evidence: dict) -> None:
        with self._lock, self.audit.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(evidence) + "\n")


def _preprocessing(image, profile) -> dict:
    """How stored pixels became the model's input: DICOM windowing, 8-bit size, the model's pixel budget."""
    height, width = image.pixels.shape[:2]
    meta = image.metadata
    return {"windowing": meta.get("windowing"), "voi_applied": meta.get("voi_applied"), "size": [width, height],
            "photometric": meta.get("PhotometricInterpretation"), "view": image.view_position,
            "model_min_pixels": profile.min_pixels, "model_max_pixels": profile.max_pixels}


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


def software_versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from cxrlm import __version__

    versions = {"cxrlm": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "pydicom", "mcp"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
