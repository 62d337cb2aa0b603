"""`cxrlm eval`: run a model (and the baselines) over a manifest, score it, write the run folder.

The run folder always holds:
  predictions.jsonl  one line per (system, task, item, phrase), appended and flushed as each is done;
                     a rerun with the same settings skips what is there (resume after a crash or Ctrl-C)
  run.json           the settings the predictions were made with (a rerun with other settings is refused)
  metrics.json       per task, per metric {value, ci_low, ci_high, n}, baselines, model-vs-baseline tests
  report.md, report.html

The model is an argument (anything with `name` and `predict(image, task, *, phrase, max_new_tokens)`), so
tests pass a fake one. A cxrlm model's report is `cxrlm.chat.report`, the same two turns `cxrlm report` prints. Decoding is whatever the model does by default; cxrlm models decode greedily. Items
are processed in chunks of `batch_size`: images of a chunk are read in parallel threads, and a model that
offers `predict_batch(images, task, *, phrases, max_new_tokens) -> list[ModelOutput]` gets the whole chunk.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from cxrlm import DISCLAIMER, __version__
from cxrlm.errors import ConfigError, InputError
from cxrlm.eval import scoring
from cxrlm.eval.baselines import build_baselines, report_text
from cxrlm.pathologies import CLASSIFY_LABELS, reference_labels
from cxrlm.types import SCORED_TASKS as TASKS
from cxrlm.types import Task

MODEL = "model"  # the system name of the evaluated model in predictions.jsonl; baselines are "baseline:<name>"
PACKAGES = ("cxrlm", "numpy", "torch", "transformers", "tokenizers", "pillow", "scipy", "pycocoevalcap")
# Settings that change predictions: a resumed run must match them.
RESUME_KEYS = ("model", "calibration", "manifest_sha256", "split", "limit", "seed", "max_new_tokens", "decoding")
# How cxrlm models decode; a run folder made with another decoding (greedy box digits, before 2026-11-23) is refused.
DECODING = ("greedy; ground coordinates as expected values over whole numbers where the engine allows (cxrlm.engines.numbers); "
            "report: the reasoning turn, then the report turn (cxrlm.chat.report)")
NEEDS = {Task.REPORT: "a reference report", Task.CLASSIFY: "a known CheXpert label", Task.GROUND: "boxes"}


@dataclass
class EvalConfig:
    manifest: Path
    out_dir: Path
    tasks: tuple[str, ...] = TASKS
    split: str | None = "test"  # None: every record
    limit: int | None = None
    seed: int = 0
    max_new_tokens: int | None = None
    baselines: bool = True
    train_manifest: Path | None = None  # default: the manifest's own "train" split
    n_resamples: int = 1000
    meteor: bool = False
    model_metrics: bool = False
    batch_size: int = 8
    progress: bool = True
    min_positives: int = scoring.MIN_POSITIVES  # labels with fewer positives are marked, not ranked or averaged

    def __post_init__(self):
        self.manifest, self.out_dir = Path(self.manifest), Path(self.out_dir)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ConfigError(f"unknown task(s) {', '.join(unknown) or '(none)'}: --tasks takes {','.join(TASKS)}")
        for name in ("limit", "n_resamples", "batch_size", "max_new_tokens", "min_positives"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {value}")


@dataclass
class WorkItem:
    task: str
    id: str
    record: object  # a ManifestRecord
    image_path: Path
    reference: dict
    phrase: str | None = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- manifest and items


def read_records(path: Path) -> list:
    from cxrlm.data.manifest import read_manifest

    records = read_manifest(path)
    for record in records:  # images without a root are relative to the manifest's folder
        if record.image and record.root is None and not Path(record.image).is_absolute():
            record.root = str(path.parent.resolve())
    return records


def record_id(record) -> str:
    return f"{record.dataset}:{record.image}"


def select_records(records: Sequence, split: str | None, limit: int | None, seed: int) -> list:
    """Records of the split that have an image; a seeded random subset of `limit`, kept in manifest order."""
    chosen = [r for r in records if r.image and (split is None or r.split == split)]
    if limit is not None and limit < len(chosen):
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), size=limit, replace=False))
        chosen = [chosen[i] for i in keep]
    seen, unique = set(), []
    for record in chosen:
        if record_id(record) not in seen:
            seen.add(record_id(record))
            unique.append(record)
    return unique


def work_items(task: str, records: Sequence) -> list[WorkItem]:
    """What each task is scored on: report needs a reference text, classify a known label, ground boxes."""
    items = []
    for record in records:
        path, rid = record.image_path, record_id(record)
        truth = reference_labels(record.labels, record.source_labels)
        if task == Task.REPORT and report_text(record.report):
            reference = {"text": report_text(record.report), "synthetic": bool(record.report_is_synthetic)}
            items.append(WorkItem(task, rid, record, path, reference))
        elif task == Task.CLASSIFY and any(v in (0, 1) for v in truth.values()):
            items.append(WorkItem(task, rid, record, path, {"labels": truth}))
        elif task == Task.GROUND:
            for label in sorted({b["label"] for b in record.boxes}):
                refs = [list(b["xyxy"]) for b in record.boxes if b["label"] == label]
                items.append(WorkItem(task, rid, record, path, {"boxes": refs}, phrase=label))
    return items


def row_key(system: str, task: str, item_id: str, phrase: str | None) -> str:
    return f"{system}|{task}|{item_id}|{phrase or ''}"


# ---------------------------------------------------------------- the append-only prediction log


class PredictionLog:
    """predictions.jsonl: appended and flushed per item; a torn last line (a crash mid-write) is cut off."""

    def __init__(self, path: Path):
        self.path = path
        self._repair()
        self.rows = read_rows(path)
        self.done = {r["key"] for r in self.rows}
        self._file = path.open("a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        self.rows.append(row)
        self.done.add(row["key"])

    def close(self) -> None:
        self._file.close()


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise InputError(f"{path} line {number} is not valid JSON: delete that line (or the file) and rerun")
    return rows


# ---------------------------------------------------------------- predicting


def prediction_fields(task: str, output) -> dict:
    """The task's answer from a ModelOutput, in the row layout scoring.py reads."""
    if task == Task.REPORT:
        text = report_text({"findings": output.findings, "impression": output.impression})
        return {
            "text": text or (output.answer or "").strip(),
            "findings": output.findings,
            "impression": output.impression,
            "labels": [label.name for label in output.labels],  # the reasoning turn's, as `cxrlm report` shows
        }
    if task == Task.CLASSIFY:
        present = {label.name for label in output.labels if label.present}
        probs = {n: output.probabilities.get(n) for n in CLASSIFY_LABELS}
        # a model that answered labels without scores: a named label counts as 1, an unnamed one as 0
        out = {"probabilities": {n: float(p) if p is not None else float(n in present) for n, p in probs.items()}}
        calibration = getattr(output, "calibration", None)
        if calibration:  # kept so that eval reports calibration error before and after
            out["uncalibrated"] = {n: calibration["raw_probabilities"].get(n) for n in CLASSIFY_LABELS}
        return out
    return {"boxes": [{"label": b.label, "xyxy": list(b.xyxy), "score": b.score} for b in output.boxes]}


def predict_items(system_name: str, system, items: Sequence[WorkItem], log: PredictionLog, config: EvalConfig) -> int:
    """Predict every item not yet in the log, in chunks; returns how many were predicted now."""
    from tqdm import tqdm

    if not items:
        return 0
    todo = [w for w in items if row_key(system_name, w.task, w.id, w.phrase) not in log.done]
    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        desc=f"{system_name} {items[0].task}",
        unit="item",
        file=sys.stderr,
        disable=not config.progress,
        dynamic_ncols=True,
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start : start + config.batch_size]
            images = list(pool.map(_load_image, [w.image_path for w in chunk]))
            for item, image, output, seconds in _predict_chunk(system, chunk, images, config.max_new_tokens):
                log.append(_row(system_name, system, item, image, output, seconds))
                bar.update(1)
    bar.close()
    return len(todo)


def _predict_chunk(system, chunk: Sequence[WorkItem], images: list, max_new_tokens: int | None):
    """Yield (item, image, output, seconds) as each is ready, so every finished item is logged at once."""
    task = chunk[0].task
    began = time.perf_counter()
    if hasattr(system, "predict_batch"):
        outputs = system.predict_batch(images, task, phrases=[w.phrase for w in chunk], max_new_tokens=max_new_tokens)
        seconds = (time.perf_counter() - began) / len(chunk)
        yield from ((w, img, out, seconds) for w, img, out in zip(chunk, images, outputs))
        return
    for item, image in zip(chunk, images):
        output = system.predict(image, task, phrase=item.phrase, max_new_tokens=max_new_tokens)
        yield item, image, output, time.perf_counter() - began
        began = time.perf_counter()


def _row(system_name: str, system, item: WorkItem, image, output, seconds: float) -> dict:
    return {
        "key": row_key(system_name, item.task, item.id, item.phrase),
        "system": system_name,
        "system_name": getattr(system, "name", system_name),
        "task": item.task,
        "id": item.id,
        "phrase": item.phrase,
        "image": str(item.image_path),
        "image_size": list(image.size),
        "reference": item.reference,
        "prediction": prediction_fields(item.task, output),
        "raw_text": output.raw_text,
        "reasoning": output.reasoning,
        "warnings": list(output.warnings),
        "seconds": round(seconds, 4),
    }


def _load_image(path: Path):
    from cxrlm.gate import check_image, fill_views
    from cxrlm.io import load_image

    if not Path(path).is_file():
        raise InputError(f"image {path} named in the manifest does not exist: fix the manifest's root or image path")
    image = load_image(path)
    check_image(image, "warn")  # a manifest is curated: the gate's doubts go in the item's warnings, not a refusal
    fill_views([image])
    return image


# ---------------------------------------------------------------- the whole run


def run_eval(model, config: EvalConfig, labeler: Callable | None = None) -> dict:
    """Predict (resumably), score with bootstrap intervals, compare with baselines, write the run folder."""
    _seed_everything(config.seed)
    records = read_records(config.manifest)
    test = select_records(records, config.split, config.limit, config.seed)
    if not test:
        splits = sorted({str(r.split) for r in records})
        raise InputError(
            f"no records with images in split {config.split!r} of {config.manifest} (splits there: "
            f"{', '.join(splits) or 'none'}): pass --split"
        )
    items = {task: work_items(task, test) for task in config.tasks}
    config.out_dir.mkdir(parents=True, exist_ok=True)
    run_info = _run_info(model, config, len(test), {t: len(v) for t, v in items.items()})
    _check_resume(config.out_dir / "run.json", run_info)

    systems, notes = [(MODEL, model)], []
    if config.baselines:
        baselines, notes = _baselines(config, records, test)
        systems += [(f"baseline:{b.name}", b) for b in baselines]
    log = PredictionLog(config.out_dir / "predictions.jsonl")
    try:
        for system_name, system in systems:
            for task in config.tasks:
                if task in getattr(system, "tasks", TASKS):
                    predict_items(system_name, system, items[task], log, config)
    finally:
        log.close()
    dropped = dropped_tasks(model, config.tasks, items)

    wanted = {row_key(s, w.task, w.id, w.phrase) for s, _ in systems for t in config.tasks for w in items[t]}
    rows = [r for r in log.rows if r["key"] in wanted]
    metrics = score_run(rows, config, labeler)
    metrics["run"] = {**run_info, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    metrics["dropped_tasks"] = dropped
    metrics["notes"] = notes + [f"{task} dropped: {why}" for task, why in dropped.items()] + metrics["notes"]
    metrics = json_safe(metrics)
    (config.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False), encoding="utf-8")
    from cxrlm.eval.render import write_reports

    write_reports(config.out_dir, metrics, rows)
    return metrics


def dropped_tasks(model, tasks: Sequence[str], items: dict[str, list]) -> dict[str, str]:
    """Each asked-for task that was not scored, and why."""
    dropped = {}
    for task in tasks:
        if task not in getattr(model, "tasks", TASKS):
            dropped[task] = f"the model {getattr(model, 'name', 'given')} does not do this task"
        elif not items[task]:
            dropped[task] = f"no item of the split has what this task is scored on ({NEEDS[task]})"
    return dropped


def json_safe(value):
    """NaN and infinities (undefined metrics) become null: metrics.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def score_run(rows: Sequence[dict], config: EvalConfig, labeler: Callable | None = None) -> dict:
    """metrics.json content (less "run") from prediction rows."""
    out = {"disclaimer": DISCLAIMER, "tasks": {}, "baselines": {}, "per_label": {}, "vs_baselines": {}, "notes": []}
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["system"], row["task"]), []).append(row)
    for (system, task), group in sorted(groups.items()):
        scored = scoring.score_task(
            task, group, config.n_resamples, config.seed, meteor=config.meteor and system == MODEL, labeler=labeler,
            min_positives=config.min_positives,
        )
        if system == MODEL:
            out["tasks"][task] = scored.metrics
            out["notes"] += [f"{task}: {n}" for n in scored.notes]
            if task == Task.CLASSIFY:
                table = scored.extra["per_label"]
                out["notes"] += [f"{task}: {n}" for n in scoring.few_positive_notes(table, config.min_positives)]
                out["notes"] += [f"{task}: {n}" for n in scoring.ece_interval_notes(scored.metrics)]
            if task == Task.REPORT and config.model_metrics:
                _add_model_metrics(out, group)
        else:
            out["baselines"].setdefault(system.removeprefix("baseline:"), {})[task] = scored.metrics
        out["per_label"].setdefault(system, {})[task] = scored.extra
    for (system, task), group in sorted(groups.items()):
        if system != MODEL and (MODEL, task) in groups:
            name = system.removeprefix("baseline:")
            out["vs_baselines"].setdefault(task, {})[name] = scoring.compare_task(
                task, groups[(MODEL, task)], group, n_resamples=config.n_resamples, seed=config.seed, labeler=labeler,
                min_positives=config.min_positives,
            )
    return out


def _add_model_metrics(out: dict, rows: Sequence[dict]) -> None:
    from cxrlm.metrics.model_based import model_based_metrics

    values, notes = model_based_metrics([r["reference"]["text"] for r in rows], [r["prediction"]["text"] for r in rows])
    for key, value in values.items():
        out["tasks"][Task.REPORT][key] = {"value": value, "ci_low": None, "ci_high": None, "n": len(rows)}
    out["notes"] += [f"report: {n}" for n in notes]


def _baselines(config: EvalConfig, records: Sequence, test: Sequence) -> tuple[list, list[str]]:
    if config.train_manifest is not None:
        train = [r for r in read_records(config.train_manifest) if r.split in (None, "train")]
    else:
        train = [r for r in records if r.split == "train"]
    # A baseline must never see an evaluated image (e.g. --split all): nearest-neighbour would find the item itself.
    evaluated = {r.image_path for r in test}
    leaked = [r for r in train if r.image_path in evaluated]
    train = [r for r in train if r.image_path not in evaluated]
    baselines, notes = build_baselines(train, lambda r: _load_image(r.image_path), progress=config.progress)
    if leaked:
        notes.insert(0, f"{len(leaked)} evaluated images were left out of the baselines' training records")
    if not train:
        notes.insert(0, "no training records (split 'train'): only the constant baseline runs; pass --train-manifest")
    return baselines, notes


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:  # only a torch model needs torch seeded; do not import it for others
        sys.modules["torch"].manual_seed(seed)


def _run_info(model, config: EvalConfig, n_records: int, n_items: dict[str, int]) -> dict:
    return {
        "model": getattr(model, "name", type(model).__name__),
        "calibration": _calibration_source(model),
        "prompt_template_version": getattr(model, "template_version", None),
        "manifest": str(config.manifest.resolve()),
        "manifest_sha256": hashlib.sha256(config.manifest.read_bytes()).hexdigest(),
        "split": config.split,
        "limit": config.limit,
        "seed": config.seed,
        "max_new_tokens": config.max_new_tokens,
        "decoding": DECODING,
        "tasks": list(config.tasks),
        "n_records": n_records,
        "n_items": n_items,
        "n_resamples": config.n_resamples,
        "min_positives": config.min_positives,
        "baselines": config.baselines,
        "versions": _versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _calibration_source(model) -> str | None:
    """'temperature, nih14 val (PATH)' for a calibrated model, else None: part of what a resumed run must match."""
    calibration = getattr(model, "calibration", None)
    return f"{calibration.summary} ({calibration.source})" if calibration else None


def _versions() -> dict[str, str | None]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["cxrlm"] = out["cxrlm"] or __version__
    return out


def _check_resume(path: Path, run_info: dict) -> None:
    settings = {k: run_info[k] for k in RESUME_KEYS}
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise InputError(f"{path} is not valid JSON: delete the run folder {path.parent} or pick another --out")
        changed = [k for k in RESUME_KEYS if previous.get(k) != settings[k]]
        if changed:
            raise InputError(
                f"{path.parent} holds a run with other settings ({', '.join(changed)} differ): "
                "pass a new --out, or delete that folder to start over"
            )
    else:
        path.write_text(json.dumps(settings, indent=2), encoding="utf-8")


# ---------------------------------------------------------------- comparing two runs


def compare_runs(run_a: Path, run_b: Path, n_resamples: int = 1000, seed: int = 0, labeler=None) -> dict:
    """Paired bootstrap of run A's model minus run B's model, per task, over the items both runs scored.
    Labels are ranked as run A was (its min_positives)."""
    rows_a, rows_b = _model_rows(Path(run_a)), _model_rows(Path(run_b))
    min_positives = _run_settings(Path(run_a)).get("min_positives") or scoring.MIN_POSITIVES
    out = {"run_a": str(run_a), "run_b": str(run_b), "tasks": {}}
    for task in TASKS:
        a = [r for r in rows_a if r["task"] == task]
        b = [r for r in rows_b if r["task"] == task]
        shared, _ = scoring.align(a, b)
        if shared:
            out["tasks"][task] = {
                "n_shared": len(shared),
                "metrics": scoring.compare_task(
                    task, a, b, n_resamples=n_resamples, seed=seed, labeler=labeler, min_positives=min_positives
                ),
            }
    if not out["tasks"]:
        raise InputError(f"{run_a} and {run_b} share no scored item: compare runs made on the same manifest")
    return out


def _run_settings(run: Path) -> dict:
    """The "run" block of a run folder's metrics.json; empty when it has none (a run that did not finish)."""
    try:
        return json.loads((run / "metrics.json").read_text(encoding="utf-8")).get("run") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def _model_rows(run: Path) -> list[dict]:
    path = run / "predictions.jsonl"
    if not path.is_file():
        raise InputError(
            f"{run} is not an eval run folder (no predictions.jsonl): pass the --out folder of `cxrlm eval`"
        )
    return [r for r in read_rows(path) if r.get("system") == MODEL]
