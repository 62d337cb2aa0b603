"""Batch runs over a folder tree: `cxrlm report|classify|ground DIR --out results.jsonl`.

The tree is walked in sorted order; DICOM files are grouped into studies by StudyInstanceUID, every PNG/JPEG/TIFF
is a study of its own. The UID is an identifier: it is held in memory for grouping only, and the output names a
DICOM study by a hash of it (`dicom-` + sha256 prefix). Results go to a JSONL log (eval.runner.PredictionLog:
one flushed line per study, a torn last line cut off), so a rerun skips every study already there. A file the
reader or the input gate refuses becomes a row with the one-line reason; the run goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cxrlm.errors import InputError, library_warnings, one_line
from cxrlm.eval.runner import PredictionLog, prediction_fields
from cxrlm.limits import MAX_IMAGES, too_many_images
from cxrlm.types import Task

MAX_FILES = 100_000  # files looked at per run (--max-files)
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PRESENT_AT = 0.5  # a classify probability counted as a finding in the summary


@dataclass
class BatchStudy:
    key: str  # a file's relative path, or "dicom-" + a hash of the StudyInstanceUID; never the UID itself
    files: list[Path] = field(default_factory=list)
    refusal: str | None = None  # set when the files cannot form a study (unreadable, too many views)


def find_studies(root: Path, max_files: int = MAX_FILES) -> list[BatchStudy]:
    """Every study under `root`, in a stable order; refuses a tree of more than `max_files` candidate files."""
    files = _candidate_files(root, max_files)
    by_uid: dict[str, BatchStudy] = {}
    studies = []
    for path in files:
        name = str(path.relative_to(root))
        if path.suffix.lower() in RASTER_SUFFIXES:
            studies.append(BatchStudy(name, [path]))
            continue
        try:
            uid = _study_uid(path)
        except InputError as err:
            studies.append(BatchStudy(name, [path], one_line(str(err))))
            continue
        if uid not in by_uid:
            by_uid[uid] = BatchStudy("dicom-" + hashlib.sha256(uid.encode()).hexdigest()[:16])
            studies.append(by_uid[uid])
        by_uid[uid].files.append(path)
    for study in studies:
        study.refusal = study.refusal or too_many_images(len(study.files), MAX_IMAGES, "split the study")
    return studies


def _candidate_files(root: Path, max_files: int) -> list[Path]:
    """Rasters by suffix, DICOM by suffix or by its DICM preamble; hidden files and folders are skipped."""
    if not root.is_dir():
        raise InputError(f"{root} is not a folder: give a folder of PNG/JPEG/DICOM files")
    found = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or not path.is_file():
            continue
        if path.suffix.lower() in RASTER_SUFFIXES + (".dcm",) or _has_preamble(path):
            found.append(path)
            if len(found) > max_files:
                raise InputError(f"{root} holds more than {max_files:,} image files: raise --max-files or give a "
                                 "smaller folder")
    return found


def _has_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _study_uid(path: Path) -> str:
    """Only StudyInstanceUID is parsed (stop before pixels); a file without one is a study of its own."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:  # pydicom's warnings may quote the UID, an identifier: swallowed (the loader reports the file's own)
        with library_warnings([], "pydicom"):  # values are converted when read: the get belongs inside
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"], force=True)
            uid = ds.get("StudyInstanceUID")
    except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError, EOFError) as err:
        raise InputError(f"{path.name}: not a readable DICOM file ({type(err).__name__})") from None
    return str(uid or f"file:{path}")


def run_batch(model, studies: list[BatchStudy], task: str, log: PredictionLog, *, phrase: str | None = None,
              gate: str = "on", chunk_size: int = 8, limit: int | None = None, max_new_tokens: int | None = None,
              progress: bool = False) -> int:
    """Predict every study not yet in `log`, `chunk_size` at a time through model.predict_batch; returns how many
    studies were done now (`limit` stops early, as a crash would)."""
    from tqdm import tqdm

    remaining = [s for s in studies if s.key not in log.done]
    todo = remaining[:limit]
    bar = tqdm(total=len(studies), initial=len(studies) - len(remaining), unit="study", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, desc=task)
    for start in range(0, len(todo), chunk_size):
        ready = []
        for study in todo[start : start + chunk_size]:
            loaded = _load(study, model, gate)
            if isinstance(loaded, str):
                log.append(_refused(study, task, loaded))
                bar.update(1)
            else:
                ready.append((study, loaded))
        if ready:
            began = time.perf_counter()
            outputs = model.predict_batch([s for _, s in ready], task, phrases=[phrase] * len(ready),
                                          max_new_tokens=max_new_tokens)
            seconds = (time.perf_counter() - began) / len(ready)
            for (study, _), output in zip(ready, outputs):
                log.append(_answered(study, task, output, seconds))
                bar.update(1)
    bar.close()
    return len(todo)


def _load(study: BatchStudy, model, gate: str):
    """The loaded, gated Study, or the one-line reason it is refused."""
    from cxrlm.gate import check_study, check_views
    from cxrlm.io import load_study

    if study.refusal:
        return study.refusal
    try:
        loaded = load_study(study.files)
        check_study(loaded, gate)
        check_views(loaded, model.profile.views, model.name, gate)
    except InputError as err:
        return one_line(str(err))
    return loaded


def _row(study: BatchStudy, task: str) -> dict:
    return {"key": study.key, "task": task, "files": [str(p) for p in study.files]}


def _refused(study: BatchStudy, task: str, reason: str) -> dict:
    return _row(study, task) | {"refused": reason}


def _answered(study: BatchStudy, task: str, output, seconds: float) -> dict:
    return _row(study, task) | {"prediction": prediction_fields(task, output), "warnings": list(output.warnings),
                                "seconds": round(seconds, 4)}


def refusal_kind(reason: str) -> str:
    """A refusal without its file name and score, so that the summary counts alike reasons together."""
    import re

    reason = re.sub(r" \(score [\d.]+\)", "", reason)
    head, _, rest = reason.partition(": ")
    return rest if rest and " " not in head else reason


def summary(rows: list[dict], task: str) -> dict:
    """Studies answered, refusals by reason, and how often each label (or a box) was found."""
    refusals = Counter(refusal_kind(r["refused"]) for r in rows if "refused" in r)
    found: Counter = Counter()
    for row in rows:
        prediction = row.get("prediction") or {}
        if task == Task.REPORT:
            found.update(prediction.get("labels", []))
        elif task == Task.CLASSIFY:
            found.update(n for n, p in prediction.get("probabilities", {}).items() if p >= PRESENT_AT)
        elif prediction.get("boxes"):
            found.update(box["label"] or "box" for box in prediction["boxes"])
    return {"studies": len(rows), "answered": len(rows) - sum(refusals.values()),
            "refused": dict(refusals.most_common()), "found": dict(found.most_common())}


def write_csv(rows: list[dict], path: Path, task: str) -> None:
    """One line per study: key, files, refusal, and the task's answer flattened (labels joined by ';')."""
    from cxrlm.pathologies import CLASSIFY_LABELS

    answer_columns = {Task.REPORT: ["labels", "findings", "impression"], Task.CLASSIFY: list(CLASSIFY_LABELS),
                      Task.GROUND: ["boxes"]}[task]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "files", "refused", *answer_columns])
        for row in rows:
            prediction = row.get("prediction") or {}
            values = prediction.get("probabilities", prediction)
            cells = [_cell(values.get(c)) for c in answer_columns]
            writer.writerow([row["key"], ";".join(row["files"]), row.get("refused", ""), *cells])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    return str(value)
