"""`cxrlm study results`: reader accuracy, time and ratings per condition, and paired comparisons between conditions.

Accuracy pools every (reader, case) read under a condition against the case's reference labels, label by label
(a blank reference is skipped): sensitivity tp/(tp+fn), specificity tn/(tn+fp), F1 2tp/(2tp+fp+fn); micro sums the
counts over labels, macro averages the labels where the figure is defined (cxrlm.metrics.labels' conventions).
Time per case is the active time from first view to submit, pauses left out.

Comparisons: for each pair of conditions, the difference (later minus earlier in the study's order) of micro
sensitivity, specificity and F1, mean seconds per case and mean confidence, with a two-way paired bootstrap: each
resample draws readers with replacement and, independently, cases with replacement, and a response counts as often
as its reader times its case were drawn; both conditions are scored on the same draw, so a reader's and a case's
difficulty cancel in the difference. 95% percentile interval, seeded; the p-value is the centred two-sided one of
cxrlm.metrics.bootstrap. Readers and cases are both random: resampling only one understates the uncertainty.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np

from cxrlm import DISCLAIMER
from cxrlm.metrics.bootstrap import resample_indices
from cxrlm.metrics.labels import column_counts, label_matrix
from cxrlm.pathologies import CHEXPERT14
from cxrlm.study.store import AI_QUESTIONS
from cxrlm.study.teaching import model_calls

N_RESAMPLES = 2000
METHOD = ("Paired two-way bootstrap over readers and cases: each of {n} resamples draws readers and cases with "
          "replacement (seed {seed}); a response counts (times its reader was drawn) x (times its case was drawn); "
          "both conditions are scored on the same draw; 95% percentile interval of the difference; two-sided p from "
          "the centred bootstrap distribution.")
COMPARED = ("micro_sensitivity", "micro_specificity", "micro_f1", "seconds_per_case", "confidence")


def response_arrays(rows: list[dict]) -> dict:
    """Columns of the responses: truth and reader calls as (n, 14) matrices (truth NaN where blank), and the rest."""
    return {
        "truth": label_matrix([r["reference"] or {} for r in rows], CHEXPERT14),
        "calls": np.array([[float(r["findings"][n]) for n in CHEXPERT14] for r in rows]).reshape(len(rows), 14),
        "seconds": np.array([r["active_seconds"] for r in rows], dtype=float),
        "confidence": np.array([r["confidence"] for r in rows], dtype=float),
    }


def per_response_counts(arrays: dict) -> np.ndarray:
    """(n, 4, 14): tp, fp, fn, tn of each response per label."""
    truth, calls = arrays["truth"], arrays["calls"]
    return np.stack([column_counts(truth[i : i + 1], calls[i : i + 1]) for i in range(len(truth))]) if len(
        truth) else np.zeros((0, 4, 14))


def rates(counts: np.ndarray) -> dict:
    """Sensitivity, specificity and F1 from (4, ...) tp, fp, fn, tn counts (NaN where undefined)."""
    tp, fp, fn, tn = (np.asarray(c, dtype=float) for c in counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "f1": 2 * tp / (2 * tp + fp + fn)}


def accuracy(rows: list[dict]) -> dict:
    """Per-label, micro and macro sensitivity, specificity and F1 of rows' findings against their reference."""
    counts = per_response_counts(response_arrays(rows)).sum(axis=0)  # (4, 14)
    per_label = rates(counts)
    micro = rates(counts.sum(axis=1))
    return {
        "per_label": {name: {**{k: _num(v[j]) for k, v in per_label.items()}, "tp": int(counts[0, j]),
                             "fp": int(counts[1, j]), "fn": int(counts[2, j]), "tn": int(counts[3, j])}
                      for j, name in enumerate(CHEXPERT14)},
        **{f"micro_{k}": _num(v) for k, v in micro.items()},
        **{f"macro_{k}": _nanmean(v) for k, v in per_label.items()},
    }


def model_alone(cases: list[dict]) -> dict | None:
    """The model's own accuracy on the cases (its calls at cxrlm.batch.PRESENT_AT), the readers' yardstick."""
    rows = [{"findings": model_calls(c["model_output"]["probabilities"]), "reference": c["reference"],
             "active_seconds": 0.0, "confidence": 0} for c in cases if c["model_output"]]
    return {"cases": len(rows), **accuracy(rows)} if rows else None


def condition_summary(rows: list[dict]) -> dict:
    """The figures of one condition's responses."""
    arrays = response_arrays(rows)
    out = {
        "responses": len(rows), "readers": len({r["reader"] for r in rows}), "cases": len({r["case"] for r in rows}),
        **accuracy(rows),
        "seconds_per_case": _num(np.mean(arrays["seconds"])) if rows else None,
        "median_seconds_per_case": _num(np.median(arrays["seconds"])) if rows else None,
        "confidence": _num(np.mean(arrays["confidence"])) if rows else None,
    }
    for name in AI_QUESTIONS:
        answers = [r[name] for r in rows if r[name] is not None]
        out[name] = _num(np.mean(answers)) if answers else None
    return out


def paired_comparisons(rows: list[dict], conditions: list[str], seed: int = 0,
                       n_resamples: int = N_RESAMPLES) -> list[dict]:
    """Every pair of conditions (b minus a, in the study's order), each compared metric with its interval."""
    if not rows:
        return []
    readers = sorted({r["reader"] for r in rows})
    cases = sorted({r["case"] for r in rows})
    reader_of = np.array([readers.index(r["reader"]) for r in rows])
    case_of = np.array([cases.index(r["case"]) for r in rows])
    weights = (_draw_counts(len(readers), n_resamples, seed)[:, reader_of]
               * _draw_counts(len(cases), n_resamples, seed + 1)[:, case_of])  # (resamples, responses)
    arrays = response_arrays(rows)
    micro = per_response_counts(arrays).sum(axis=2)  # (n, 4)
    condition = np.array([r["condition"] for r in rows])
    observed = {c: _metrics(np.ones((1, len(rows))), micro, arrays, condition == c) for c in conditions}
    drawn = {c: _metrics(weights, micro, arrays, condition == c) for c in conditions}
    out = []
    for i, a in enumerate(conditions):
        for b in conditions[i + 1:]:
            for metric in COMPARED:
                delta = float(observed[b][metric][0] - observed[a][metric][0])
                out.append({"a": a, "b": b, "metric": metric, "difference": _num(delta),
                            **_interval(drawn[b][metric] - drawn[a][metric], delta)})
    return out


def _draw_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(resamples, n): how often each of n units is drawn in each resample."""
    draws = resample_indices(n, n_resamples, seed)
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
    return counts


def _metrics(weights: np.ndarray, micro: np.ndarray, arrays: dict, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Each compared metric per resample, responses weighted (weights: (resamples, n); mask picks a condition)."""
    w = weights[:, mask]
    counts = (w @ micro[mask]).T  # (4, resamples)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {**{f"micro_{k}": v for k, v in rates(counts).items()},
                "seconds_per_case": w @ arrays["seconds"][mask] / total,
                "confidence": w @ arrays["confidence"][mask] / total}


def _interval(diffs: np.ndarray, delta: float) -> dict:
    finite = diffs[np.isfinite(diffs)]
    if not len(finite) or not math.isfinite(delta):
        return {"ci_low": None, "ci_high": None, "p_value": None, "n_valid": int(len(finite))}
    low, high = np.percentile(finite, [2.5, 97.5])
    p = (1 + np.sum(np.abs(finite - delta) >= abs(delta))) / (len(finite) + 1)
    return {"ci_low": float(low), "ci_high": float(high), "p_value": float(p), "n_valid": int(len(finite))}


def compute(rows: list[dict], conditions: list[str], seed: int = 0, n_resamples: int = N_RESAMPLES,
            cases: list[dict] = ()) -> dict:
    """Every figure; `cases` (StudyStore.cases) adds the model's own accuracy."""
    return {
        "notice": DISCLAIMER,
        "labelled": any(r["reference"] for r in rows),
        "conditions": {c: condition_summary([r for r in rows if r["condition"] == c]) for c in conditions},
        "model_alone": model_alone(list(cases)),
        "per_reader": {reader: {c: condition_summary([r for r in rows if r["reader"] == reader
                                                      and r["condition"] == c])["micro_f1"] for c in conditions}
                       for reader in sorted({r["reader"] for r in rows})},
        "comparisons": paired_comparisons(rows, conditions, seed, n_resamples) if len(conditions) > 1 else [],
        "method": METHOD.format(n=n_resamples, seed=seed),
    }


# Files ----------------------------------------------------------------------------------------------------------
CSV_COLUMNS = ("reader", "case", "condition", "position", "first_view_at", "submitted_at", "active_seconds",
               "confidence", *AI_QUESTIONS, "impression")


def write_csv(rows: list[dict], path: Path) -> None:
    """Every response, one line each: the reader's 14 calls (finding: 1/0) and the reference (reference: 1/0/blank)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_COLUMNS, *(f"finding:{n}" for n in CHEXPERT14),
                         *(f"reference:{n}" for n in CHEXPERT14)])
        for r in rows:
            reference = r["reference"] or {}
            writer.writerow([_cell(r[c]) for c in CSV_COLUMNS] + [int(r["findings"][n]) for n in CHEXPERT14]
                            + [_cell(reference.get(n)) for n in CHEXPERT14])


def write_results(study, rows: list[dict], out_dir: Path, seed: int = 0, n_resamples: int = N_RESAMPLES,
                  cases: list[dict] = ()) -> dict:
    """results.json, responses.csv and report.html in out_dir; returns the results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"study": {"id": study.id, "name": study.name, "mode": study.mode, "conditions": study.conditions,
                         "seed": study.seed, "model": study.model, "design_warnings": study.design_warnings},
               **compute(rows, list(study.conditions), seed, n_resamples, cases)}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_csv(rows, out_dir / "responses.csv")
    (out_dir / "report.html").write_text(render_html(results), encoding="utf-8")
    return results


def render_html(results: dict) -> str:
    from cxrlm.eval.render import CSS, html_table, img_tag, fmt

    e = html.escape
    conditions = results["conditions"]
    names = list(conditions)
    summary_keys = ("responses", "readers", "cases", "micro_sensitivity", "micro_specificity", "micro_f1",
                    "macro_sensitivity", "macro_specificity", "macro_f1", "seconds_per_case",
                    "median_seconds_per_case", "confidence", *AI_QUESTIONS)
    summary = [[k, *(_fmt(fmt, conditions[c][k]) for c in names)] for k in summary_keys]
    per_label = [[n, *(f"{fmt(conditions[c]['per_label'][n]['sensitivity'], 2)} / "
                       f"{fmt(conditions[c]['per_label'][n]['specificity'], 2)} / "
                       f"{fmt(conditions[c]['per_label'][n]['f1'], 2)}" for c in names)] for n in CHEXPERT14]
    comparisons = [[f"{c['b']} - {c['a']}", c["metric"], fmt(c["difference"]),
                    f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]", fmt(c["p_value"])] for c in results["comparisons"]]
    study = results["study"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cxrlm study: {e(study['name'])}"
             f"</title><style>{CSS}</style></head><body>", f"<p class='disclaimer'>{e(DISCLAIMER)}</p>",
             f"<h1>Reader study {e(study['name'])}</h1>",
             f"<p><small>id {e(study['id'])} &middot; mode {e(study['mode'])} &middot; design seed {study['seed']}"
             f" &middot; model {e(str((study['model'] or {}).get('name', '-')))}</small></p>",
             "<h2>Per condition</h2>", html_table(["figure", *names], summary),
             "<h2>Per label (sensitivity / specificity / F1)</h2>", html_table(["label", *names], per_label)]
    model = results["model_alone"]
    if model:
        parts.append(f"<p>The model alone ({model['cases']} cases, its calls at probability 0.5): micro sensitivity "
                     f"{fmt(model['micro_sensitivity'])}, specificity {fmt(model['micro_specificity'])}, F1 "
                     f"{fmt(model['micro_f1'])}; macro F1 {fmt(model['macro_f1'])}.</p>")
    if comparisons:
        parts += ["<h2>Paired comparisons</h2>", f"<p><small>{e(results['method'])}</small></p>",
                  html_table(["difference", "metric", "value", "95% CI", "p"], comparisons)]
    parts += [img_tag(png, "plot") for png in _plots(results)]
    if not results["labelled"]:
        parts.append("<p>The cases have no reference labels: accuracy figures are left blank.</p>")
    parts.append("<p><small>Every response: responses.csv. All figures: results.json.</small></p></body></html>")
    return "\n".join(parts)


def _plots(results: dict) -> list[bytes]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from cxrlm.eval.render import figure_png

    conditions = results["conditions"]
    names = list(conditions)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for offset, key in enumerate(("micro_sensitivity", "micro_specificity", "micro_f1")):
        axes[0].bar(np.arange(len(names)) + offset * 0.27, [conditions[c][key] or 0 for c in names], 0.27, label=key)
    axes[0].set_xticks(np.arange(len(names)) + 0.27, names)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    axes[0].set_title("reader accuracy vs reference")
    axes[1].bar(names, [conditions[c]["seconds_per_case"] or 0 for c in names])
    axes[1].set_title("mean active seconds per case")
    for offset, key in enumerate(("confidence", *AI_QUESTIONS)):
        axes[2].bar(np.arange(len(names)) + offset * 0.16, [conditions[c][key] or 0 for c in names], 0.16, label=key)
    axes[2].set_xticks(np.arange(len(names)) + 0.32, names)
    axes[2].set_ylim(0, 5)
    axes[2].legend(fontsize=7)
    axes[2].set_title("ratings (1-5)")
    fig.suptitle("Research use only. Not a medical device.", fontsize=8)
    return [figure_png(plt, fig)]


def _fmt(fmt, value) -> str:
    return str(value) if isinstance(value, int) else fmt(value)


def _num(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


def _cell(value) -> str:
    return "" if value is None else str(value)
