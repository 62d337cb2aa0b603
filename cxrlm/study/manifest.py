"""The case list of a study: a CSV or JSONL file beside (or above) its images.

CSV: a header with `case_id`, `images` (one path, or several joined by ';') and optionally any CheXpert-14 label
columns (1 present, 0 absent, blank or -1 not known). JSONL: one object per line, {"case_id": ..., "images": [...],
"labels": {"Cardiomegaly": 1, ...}}. Paths are relative to the manifest's folder and must stay inside it; PNG, JPEG
or DICOM. Everything is checked before any image is decoded: the file's size, the number of cases, ids, paths and
label values; the first problem is a one-line InputError naming the line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cxrlm.errors import InputError, quote
from cxrlm.limits import MAX_IMAGES
from cxrlm.pathologies import CHEXPERT14

MAX_MANIFEST_BYTES = 5_000_000
MAX_CASES = 2_000  # a reader study is tens to hundreds of cases; more is a mistake or a dataset
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", "")  # "" : DICOM files often have no suffix
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LABEL_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "": None, "-1": None, "-1.0": None}


@dataclass(frozen=True)
class Case:
    case_id: str
    images: list[Path]  # resolved, inside the manifest's folder
    reference: dict[str, int | None] | None  # every CheXpert-14 label, or None when the manifest has no labels


def read_manifest(path: str | Path, max_cases: int = MAX_CASES) -> list[Case]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such manifest: give a CSV or JSONL case list (docs/STUDY.md)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(f"{path.name} is over {MAX_MANIFEST_BYTES:,} bytes: a study manifest lists cases, not data")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    rows = _jsonl_rows(text, path.name) if path.suffix.lower() == ".jsonl" else _csv_rows(text, path.name)
    if not rows:
        raise InputError(f"{path.name} lists no cases: add one line per case")
    if len(rows) > max_cases:
        raise InputError(f"{path.name} lists {len(rows):,} cases: the limit is {max_cases:,} (split the study)")
    root = path.resolve().parent
    cases = [_case(line, case_id, images, labels, root, path.name) for line, case_id, images, labels in rows]
    seen: set[str] = set()
    for (line, *_), case in zip(rows, cases):
        if case.case_id in seen:
            raise InputError(f"{path.name} line {line}: case id {case.case_id!r} repeats: give each case its own id")
        seen.add(case.case_id)
    labelled = {case.reference is not None for case in cases}
    if len(labelled) > 1:
        raise InputError(f"{path.name}: some cases have reference labels and some do not: label all or none")
    return cases


def _csv_rows(text: str, name: str) -> list[tuple[int, str, list[str], dict | None]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    unknown = [c for c in columns if c not in ("case_id", "images", *CHEXPERT14)]
    if "case_id" not in columns or "images" not in columns or unknown:
        raise InputError(f"{name}: columns must be case_id, images and CheXpert-14 labels"
                         + (f" (unknown: {quote(', '.join(unknown))})" if unknown else ""))
    labels = [c for c in columns if c in CHEXPERT14]
    return [(line, row["case_id"] or "", [p for p in (row["images"] or "").split(";") if p.strip()],
             {n: row[n] for n in labels} if labels else None)
            for line, row in enumerate(reader, start=2)]


def _jsonl_rows(text: str, name: str) -> list[tuple[int, str, list[str], dict | None]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InputError(f"{name} line {line}: not JSON ({err.msg})") from None
        if not isinstance(record, dict) or set(record) - {"case_id", "images", "labels"}:
            raise InputError(f"{name} line {line}: an object with case_id, images and optional labels only")
        images = record.get("images")
        images = [images] if isinstance(images, str) else images
        labels = record.get("labels")
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images) or not (
                labels is None or isinstance(labels, dict)):
            raise InputError(f"{name} line {line}: images is a list of paths and labels an object")
        rows.append((line, str(record.get("case_id", "")), images,
                     {k: "" if v is None else str(v) for k, v in labels.items()} if labels is not None else None))
    return rows


def _case(line: int, case_id: str, images: list[str], labels: dict | None, root: Path, name: str) -> Case:
    where = f"{name} line {line}"
    if not CASE_ID.fullmatch(case_id):
        raise InputError(f"{where}: case id {quote(case_id)!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if not images:
        raise InputError(f"{where}: no image path: give one (or several joined by ';')")
    if len(images) > MAX_IMAGES:
        raise InputError(f"{where}: {len(images)} images; a case has at most {MAX_IMAGES} views")
    return Case(case_id, [_image_path(p.strip(), root, where) for p in images], _reference(labels, where))


def _image_path(text: str, root: Path, where: str) -> Path:
    path = (root / text).resolve()
    if not path.is_relative_to(root):
        raise InputError(f"{where}: {quote(text)} leaves the manifest's folder: keep images beside or below it")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{where}: {quote(text)} is not PNG, JPEG or DICOM")
    if not path.is_file():
        raise InputError(f"{where}: {quote(text)} does not exist (paths are relative to the manifest)")
    return path


def _reference(labels: dict | None, where: str) -> dict[str, int | None] | None:
    if labels is None:
        return None
    unknown = [k for k in labels if k not in CHEXPERT14]
    if unknown:
        raise InputError(f"{where}: {quote(unknown[0])} is not a CheXpert-14 label")
    out = {}
    for label in CHEXPERT14:
        value = (labels.get(label) or "").strip()
        if value not in LABEL_VALUES:
            raise InputError(f"{where}: {label} is {quote(value)!r}: use 1, 0 or blank")
        out[label] = LABEL_VALUES[value]
    return out
