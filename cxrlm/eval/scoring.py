"""Turn prediction rows (the lines of predictions.jsonl) into metrics with bootstrap intervals, per task.

For each task a function builds `MetricSpec`s: a metric function and its per-item columns, so the same spec
serves the point value, the bootstrap interval and the paired comparison of two systems over shared items.
Corpus metrics stay exact under resampling because their columns hold per-item statistics (BLEU n-gram counts,
CE label vectors, COCO matches), not per-item scores. One approximation: CIDEr-D's document frequencies come
from all references of the run and are held fixed across resamples.

Row layout (written by runner.py): {"task", "id", "phrase", "reference": {...}, "prediction": {...}, ...}
  report:   reference {"text", "synthetic"}            prediction {"text"}
  classify: reference {"labels": {name: 1|0|-1|None}}  prediction {"probabilities": {name: float}}
  ground:   reference {"boxes": [xyxy, ...]}           prediction {"boxes": [{"xyxy", "score"}, ...]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from cxrlm.metrics import bootstrap, boxes, calibration, labels, text
from cxrlm.pathologies import CLASSIFY_LABELS, NIH14
from cxrlm.types import SCORED_TASKS as TASKS
from cxrlm.types import Task
# The metrics a model is compared on against baselines and other runs, per task.
PRIMARY = {
    Task.REPORT: ("bleu4", "rouge_l", "cider_d", "ce_f1_micro_14", "ce_f1_micro_5"),
    Task.CLASSIFY: ("macro_auroc_nih", "macro_auroc", "macro_f1"),
    Task.GROUND: ("mean_iou", "hit_rate_50", "map50"),
}
# Also in the CLI summary (lower is better, so not in the model-vs-baseline verdicts, which read "higher is better").
SUMMARY_EXTRA = {Task.CLASSIFY: ("ece", "ece_uncalibrated", "ece_change", "brier", "brier_uncalibrated", "brier_change")}
MIN_POSITIVES = 10  # a label is ranked (per-label AUROC, macro averages) with this many positive items
ONE_SCORE_SHARE = 0.8  # above this first_component_share, the notes say the labels follow one number per image
CE_KEYS = ("ce_f1_micro_14", "ce_f1_macro_14", "ce_f1_micro_5", "ce_f1_macro_5")


@dataclass
class MetricSpec:
    name: str
    fn: Callable[..., float]
    columns: tuple


@dataclass
class TaskScores:
    metrics: dict[str, dict]  # name -> {value, ci_low, ci_high, n}
    extra: dict = field(default_factory=dict)  # per-label tables, counts
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- specs per task


def report_specs(rows: Sequence[dict], labeler: Callable | None = None) -> list[MetricSpec]:
    refs = [r["reference"]["text"] for r in rows]
    hyps = [r["prediction"].get("text") or "" for r in rows]
    stats = np.stack([text.bleu_stats(r, h) for r, h in zip(refs, hyps)]) if rows else np.zeros((0, 10))
    specs = [MetricSpec(f"bleu{k}", _bleu_k(k), (stats,)) for k in range(1, 5)]
    specs.append(MetricSpec("rouge_l", bootstrap.mean, (np.array(text.rouge_l_scores(refs, hyps)),)))
    specs.append(MetricSpec("cider_d", bootstrap.mean, (np.array(text.cider_d_scores(refs, hyps)),)))
    ref_labels, hyp_labels = _ce_matrices(refs, hyps, labeler)
    specs += [MetricSpec(key, _ce_key(key), (ref_labels, hyp_labels)) for key in CE_KEYS]
    return specs


def ranked_labels(truth: np.ndarray, min_positives: int = MIN_POSITIVES) -> list[int]:
    """Columns with at least `min_positives` positive items: the labels ranked and macro-averaged. Fewer positives
    give an AUROC of 1.000 [1.000, 1.000] from one lucky image; such labels are shown, marked, not averaged."""
    return [j for j in range(truth.shape[1]) if np.sum(truth[:, j] == 1) >= min_positives]


def classify_specs(rows: Sequence[dict], min_positives: int = MIN_POSITIVES) -> list[MetricSpec]:
    truth, score = classify_matrices(rows)
    # Label sets are fixed on the full split before resampling. NIH-14 ones: the model card's rule.
    ranked = ranked_labels(truth, min_positives)
    nih = [j for j in ranked if CLASSIFY_LABELS[j] in NIH14]
    specs = [MetricSpec("macro_auroc_nih", labels.macro_auroc, (truth[:, nih], score[:, nih]))] if nih else []
    specs += [
        MetricSpec("macro_auroc", labels.macro_auroc, (truth[:, ranked], score[:, ranked])),
        MetricSpec("micro_auroc", _micro_auroc, (truth, score)),
        MetricSpec("macro_f1", labels.macro_f1, (truth[:, ranked], score[:, ranked])),
        MetricSpec("micro_f1", labels.micro_f1, (truth, score)),
        MetricSpec("first_component_share", labels.first_component_share, (score,)),
        MetricSpec("ece", calibration.macro_ece, (truth[:, ranked], score[:, ranked])),
        MetricSpec("brier", calibration.macro_brier, (truth[:, ranked], score[:, ranked])),
    ]
    raw = raw_matrix(rows)
    if raw is not None:  # a calibrated model: its raw probabilities too, to show what calibration changed
        columns = (truth[:, ranked], score[:, ranked], raw[:, ranked])
        specs += [
            MetricSpec("ece_uncalibrated", calibration.macro_ece, (truth[:, ranked], raw[:, ranked])),
            MetricSpec("brier_uncalibrated", calibration.macro_brier, (truth[:, ranked], raw[:, ranked])),
            # calibrated minus raw on the same resampled items: a paired interval of what calibration changed
            MetricSpec("ece_change", _change(calibration.macro_ece), columns),
            MetricSpec("brier_change", _change(calibration.macro_brier), columns),
        ]
    return specs


def ground_specs(rows: Sequence[dict]) -> list[MetricSpec]:
    refs = [r["reference"]["boxes"] for r in rows]
    preds = [[b["xyxy"] for b in r["prediction"]["boxes"]] for r in rows]
    ious = np.array([boxes.item_iou(r, p) for r, p in zip(refs, preds)])
    f1s = np.array([boxes.soft_f1(r, p)["f1"] for r, p in zip(refs, preds)])
    phrases = [r["phrase"] for r in rows]
    matches = [
        boxes.match_detections(
            ref, [(b["xyxy"], 1.0 if b.get("score") is None else b["score"]) for b in r["prediction"]["boxes"]]
        )
        for ref, r in zip(refs, rows)
    ]
    return [
        MetricSpec("mean_iou", bootstrap.mean, (ious,)),
        MetricSpec("hit_rate_50", bootstrap.mean, ((ious >= 0.5).astype(float),)),
        MetricSpec("soft_f1", bootstrap.mean, (f1s,)),
        MetricSpec("map50", _map_key("map50"), (phrases, matches)),
        MetricSpec("map50_95", _map_key("map50_95"), (phrases, matches)),
    ]


def task_specs(
    task: str, rows: Sequence[dict], labeler: Callable | None = None, min_positives: int = MIN_POSITIVES
) -> list[MetricSpec]:
    if task == Task.REPORT:
        return report_specs(rows, labeler)
    if task == Task.CLASSIFY:
        return classify_specs(rows, min_positives)
    if task == Task.GROUND:
        return ground_specs(rows)
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


# ---------------------------------------------------------------- scoring and comparing


def score_task(
    task: str,
    rows: Sequence[dict],
    n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
    seed: int = 0,
    meteor: bool = False,
    labeler: Callable | None = None,
    min_positives: int = MIN_POSITIVES,
) -> TaskScores:
    """Every metric of one system on one task, each {value, ci_low, ci_high, n}, plus per-label extras."""
    if not rows:
        return TaskScores({}, notes=[f"no {task} items to score"])
    metrics = {
        spec.name: bootstrap.bootstrap_ci(spec.fn, *spec.columns, n_resamples=n_resamples, seed=seed).to_dict()
        for spec in task_specs(task, rows, labeler, min_positives)
    }
    result = TaskScores(metrics)
    if task == Task.REPORT:
        _report_extras(rows, result, meteor)
    elif task == Task.CLASSIFY:
        result.extra["per_label"] = _classify_per_label(rows, n_resamples, seed, min_positives)
        share = metrics["first_component_share"]["value"]
        if share is not None and share > ONE_SCORE_SHARE:
            result.notes.append(
                f"{share:.0%} of the label scores' variance is one component: every label follows about one number "
                "per image, so its AUROCs rank images by that one number, not by finding"
            )
    elif task == Task.GROUND:
        result.extra["per_label"] = _ground_per_label(rows)
    return result


def compare_task(
    task: str,
    rows_a: Sequence[dict],
    rows_b: Sequence[dict],
    names: Sequence[str] | None = None,
    n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
    seed: int = 0,
    labeler: Callable | None = None,
    min_positives: int = MIN_POSITIVES,
) -> dict[str, dict]:
    """Paired bootstrap A - B per metric over the items both have, matched by (id, phrase)."""
    rows_a, rows_b = align(rows_a, rows_b)
    if not rows_a:
        return {}
    specs_a = {s.name: s for s in task_specs(task, rows_a, labeler, min_positives)}
    specs_b = {s.name: s for s in task_specs(task, rows_b, labeler, min_positives)}
    wanted = names or PRIMARY[task]
    return {
        name: bootstrap.paired_bootstrap(
            specs_a[name].fn, specs_a[name].columns, specs_b[name].columns, n_resamples=n_resamples, seed=seed
        ).to_dict()
        for name in wanted
        if name in specs_a and name in specs_b  # macro_auroc_nih exists only where NIH labels are scored
    }


def align(rows_a: Sequence[dict], rows_b: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The rows of A and B for the items both scored, in one order."""
    by_key_b = {item_key(r): r for r in rows_b}
    shared = sorted({item_key(r) for r in rows_a} & set(by_key_b), key=lambda k: (k[0], k[1] or ""))
    by_key_a = {item_key(r): r for r in rows_a}
    return [by_key_a[k] for k in shared], [by_key_b[k] for k in shared]


def item_key(row: dict) -> tuple[str, str | None]:
    return row["id"], row.get("phrase")


def classify_matrices(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    truth = labels.label_matrix([r["reference"]["labels"] for r in rows], CLASSIFY_LABELS)
    score = labels.label_matrix([r["prediction"]["probabilities"] for r in rows], CLASSIFY_LABELS)
    return truth, score


def raw_matrix(rows: Sequence[dict]) -> np.ndarray | None:
    """A calibrated model's probabilities before calibration (prediction "uncalibrated"); None if any row lacks it."""
    if not rows or not all(r["prediction"].get("uncalibrated") for r in rows):
        return None
    return labels.label_matrix([r["prediction"]["uncalibrated"] for r in rows], CLASSIFY_LABELS)


# ---------------------------------------------------------------- helpers


def _bleu_k(k: int) -> Callable[[np.ndarray], float]:
    return lambda stats: text.bleu_from_stats(stats)[f"bleu{k}"]


def _ce_key(key: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda ref, hyp: labels.ce_f1_from_labels(ref, hyp)[key]


def _map_key(key: str) -> Callable[[list, list], float]:
    return lambda phrases, matches: boxes.map_from_matches(phrases, matches)[key]


def _change(metric: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    return lambda truth, calibrated, raw: metric(truth, calibrated) - metric(truth, raw)


def _micro_auroc(truth: np.ndarray, score: np.ndarray) -> float:
    return labels.auroc(truth.ravel(), score.ravel())


def _ce_matrices(refs: list[str], hyps: list[str], labeler: Callable | None) -> tuple[np.ndarray, np.ndarray]:
    label = labeler or _label_with_project_labeler
    return labels.ce_positive_matrix(_label_unique(label, refs)), labels.ce_positive_matrix(_label_unique(label, hyps))


def _label_unique(labeler: Callable, texts: list[str]) -> list[dict]:
    """Label each distinct text once (a constant baseline repeats one report for every item)."""
    unique = list(dict.fromkeys(texts))
    by_text = dict(zip(unique, labeler(unique)))
    return [by_text[t] for t in texts]


def _label_with_project_labeler(texts: list[str]) -> list[dict]:
    return [_label_one(t) for t in texts]


@lru_cache(maxsize=100_000)
def _label_one(text: str) -> dict:
    """The references are labelled again for every system compared: cache by text (rows are only read)."""
    from cxrlm.data.labeler import label_reports

    return label_reports([text], vocab="chexpert14")[0]


def _report_extras(rows: Sequence[dict], result: TaskScores, meteor: bool) -> None:
    n_synthetic = sum(bool(r["reference"].get("synthetic")) for r in rows)
    result.extra["n_synthetic_references"] = n_synthetic
    if n_synthetic:
        result.notes.append(
            f"{n_synthetic} of {len(rows)} reference reports are synthetic (generated from labels), not written by "
            "radiologists: text metrics against them measure agreement with a template, not clinical quality"
        )
    result.notes.append("CE-F1 is the project's rule-based CE-F1 (cxrlm.data.labeler), not CheXbert")
    if meteor:
        refs = [r["reference"]["text"] for r in rows]
        hyps = [r["prediction"].get("text") or "" for r in rows]
        scored = text.meteor_scores(refs, hyps)
        if scored is None:
            result.notes.append("METEOR skipped: it needs Java on PATH and pycocoevalcap (pip install 'cxrlm[eval]')")
        else:  # the jar's corpus score is not a mean of item scores, so it gets no bootstrap interval
            result.metrics["meteor"] = {"value": scored[0], "ci_low": None, "ci_high": None, "n": len(rows)}


def _classify_per_label(rows: Sequence[dict], n_resamples: int, seed: int, min_positives: int) -> dict[str, dict]:
    truth, score = classify_matrices(rows)
    raw = raw_matrix(rows)
    table = labels.classification_metrics(truth, score, CLASSIFY_LABELS)["per_label"]
    ranked = set(ranked_labels(truth, min_positives))
    for j, name in enumerate(CLASSIFY_LABELS):
        entry = table[name]
        if not entry["n"]:
            continue
        entry["ranked"] = j in ranked
        if not entry["ranked"]:
            entry["caveat"] = f"too few positives: n={entry['n_positive']}"
        columns = {"auroc": (labels.auroc, score), "ece": (calibration.ece, score), "brier": (calibration.brier, score)}
        if raw is not None:
            columns |= {"ece_uncalibrated": (calibration.ece, raw), "brier_uncalibrated": (calibration.brier, raw)}
        for key, (fn, matrix) in columns.items():
            ci = bootstrap.bootstrap_ci(fn, truth[:, j], matrix[:, j], n_resamples=n_resamples, seed=seed)
            if key != "auroc":
                entry[key] = ci.value
            if math.isfinite(ci.value):
                entry[f"{key}_ci"] = [ci.ci_low, ci.ci_high]
    return {name: _finite(values) for name, values in table.items()}


def ece_interval_notes(metrics: dict[str, dict]) -> list[str]:
    """Binned ECE is biased upwards, more on the duplicated items of a resample: a well calibrated model's
    interval can lie wholly above its value. Say so where it happens, so it is not read as a bug or as bounds."""
    above = [k for k in ("ece", "ece_uncalibrated") if (metrics.get(k) or {}).get("value") is not None
             and metrics[k].get("ci_low") is not None and metrics[k]["value"] < metrics[k]["ci_low"]]
    if not above:
        return []
    note = (f"{' and '.join(above)}: the bootstrap interval lies above the value, as binned ECE is biased upwards "
            "on resamples (duplicated items fill bins unevenly); read the interval as the spread, not as bounds")
    return [note]


def few_positive_notes(table: dict[str, dict], min_positives: int) -> list[str]:
    """The note naming the labels marked "too few positives" in a per-label classify table."""
    few = [f"{name} (n={m['n_positive']})" for name, m in table.items() if m.get("ranked") is False]
    if not few:
        return []
    note = (f"{len(few)} labels have fewer than {min_positives} positives and are shown marked, not ranked, and "
            f"left out of the macro averages: {', '.join(few)}")
    return [note]


def _ground_per_label(rows: Sequence[dict]) -> dict[str, dict]:
    out: dict[str, list[float]] = {}
    for r in rows:
        preds = [b["xyxy"] for b in r["prediction"]["boxes"]]
        out.setdefault(r["phrase"], []).append(boxes.item_iou(r["reference"]["boxes"], preds))
    return {phrase: {"mean_iou": float(np.mean(v)), "n": len(v)} for phrase, v in sorted(out.items())}


def _finite(values: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
