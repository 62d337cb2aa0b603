"""Write an eval run's report.md and report.html from metrics.json content and prediction rows.

The HTML is one self-contained file (inline CSS, images and plots as base64 PNG, no script, no external
link), so it can be mailed or archived. Plots (ROC curves, per-label bars) need matplotlib (the `eval` extra);
without it the HTML says so and keeps the tables and the sample grid (drawn with Pillow).
Both files open with the research-use disclaimer. Nothing here computes a metric: it only lays them out.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlm import DISCLAIMER
from cxrlm.eval.scoring import TASKS, classify_matrices, raw_matrix
from cxrlm.metrics.calibration import N_BINS, reliability_bins
from cxrlm.metrics.labels import roc_curve
from cxrlm.pathologies import CLASSIFY_LABELS
from cxrlm.types import Task

CALIBRATION_LEGEND = (
    f"ECE: expected calibration error over {N_BINS} equal-width probability bins; Brier: mean squared error of the "
    "probability; lower is better for both. `ece`, `brier` and the macro AUROC/F1 above average the labels with "
    "enough positives (metrics.json run.min_positives); the others are marked 'too few positives', not ranked. "
    "Binned ECE is biased upwards on small samples: its bootstrap interval can lie above the value."
)
N_SAMPLES = 6
SAMPLE_WIDTH = 320
REFERENCE_COLOUR, PREDICTED_COLOUR = (40, 200, 80), (230, 60, 60)
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
background:#fff;line-height:1.4}
.disclaimer{background:#fff4d6;border-left:6px solid #e0a800;padding:.8rem 1rem;font-weight:600}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}th{background:#f1f3f5}
td:first-child,th:first-child{text-align:left}.yes{color:#0a7a2f;font-weight:600}.no{color:#a61b1b}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem;font-size:.85rem}.card img{width:100%}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
.notes li{margin:.2rem 0}small{color:#666}
"""


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def fmt_ci(entry: dict | None) -> str:
    """'0.712 [0.690, 0.735]' from {value, ci_low, ci_high}."""
    if not entry:
        return "-"
    if entry.get("ci_low") is None:
        return fmt(entry.get("value"))
    return f"{fmt(entry['value'])} [{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]"


# ---------------------------------------------------------------- tables (shared by Markdown and HTML)


def metric_table(metrics: dict, task: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per metric, the model then each baseline that ran this task."""
    model = metrics["tasks"].get(task, {})
    baselines = [(name, tasks[task]) for name, tasks in metrics.get("baselines", {}).items() if task in tasks]
    header = ["metric", "model", *(name for name, _ in baselines)]
    rows = [[name, fmt_ci(entry), *(fmt_ci(b.get(name)) for _, b in baselines)] for name, entry in model.items()]
    n = next((e.get("n") for e in model.values() if e.get("n") is not None), None)
    if n is not None:
        rows.append(["n items", str(n), *("" for _ in baselines)])
    return header, rows


def verdict(result: dict) -> str:
    """'yes' when the whole 95% interval of the difference is above 0, else why not."""
    if result.get("ci_low") is None:
        return "-"
    if result["ci_low"] > 0:
        return "yes"
    return "no: worse" if result["ci_high"] < 0 else "no: within noise"


def comparison_table(metrics: dict, task: str) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "baseline", "model - baseline [95% CI]", "p", "model better"]
    rows = []
    for baseline, results in metrics.get("vs_baselines", {}).get(task, {}).items():
        for name, r in results.items():
            ci = f"{fmt(r['delta'], 3)} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
            rows.append([name, baseline, ci, fmt(r["p_value"], 4), verdict(r)])
    return header, rows


def per_label_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """One row per label. A label with too few positives shows its caveat instead of an AUROC: an AUROC of
    1.000 [1.000, 1.000] from one positive image says nothing about the model."""
    table = metrics.get("per_label", {}).get("model", {}).get(Task.CLASSIFY, {}).get("per_label", {})
    raw = any("ece_uncalibrated" in m for m in table.values())
    header = ["label", "AUROC [95% CI]", "F1", "sens @ 90% spec", f"ECE ({N_BINS} bins) [95% CI]", "Brier [95% CI]"]
    header += ["ECE uncalibrated", "Brier uncalibrated"] if raw else []
    rows = []
    for name, m in table.items():
        auroc = f"n/a ({m['caveat']})" if m.get("caveat") else _with_ci(m, "auroc")
        row = [name, auroc, fmt(m["f1"]), fmt(m.get("sensitivity_at_90_specificity")), _with_ci(m, "ece"),
               _with_ci(m, "brier")]
        row += [_with_ci(m, "ece_uncalibrated"), _with_ci(m, "brier_uncalibrated")] if raw else []
        rows.append(row + [str(m["n"]), str(m["n_positive"])])
    return header + ["n", "positives"], rows


def _with_ci(entry: dict, key: str) -> str:
    ci = entry.get(f"{key}_ci")
    return f"{fmt(entry.get(key))} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else fmt(entry.get(key))


# ---------------------------------------------------------------- Markdown


def render_markdown(metrics: dict) -> str:
    run = metrics.get("run", {})
    lines = [f"# Evaluation of {run.get('model', 'a model')}", "", f"> **{DISCLAIMER}**", ""]
    lines += [
        f"- {key}: `{run.get(key)}`"
        for key in ("manifest", "split", "n_records", "seed", "prompt_template_version", "finished")
        if key in run
    ]
    lines.append("")
    for task in TASKS:
        if task not in metrics["tasks"]:
            continue
        lines += [f"## {task}", "", "Values with 95% bootstrap intervals (percentile, over items).", ""]
        lines += _md_table(*metric_table(metrics, task))
        header, rows = comparison_table(metrics, task)
        if rows:
            lines += ["### Model vs baselines (paired bootstrap)", ""] + _md_table(header, rows)
        if task == Task.CLASSIFY:
            lines += ["### Per label", "", CALIBRATION_LEGEND, ""] + _md_table(*per_label_table(metrics))
    if metrics.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in metrics["notes"]] + [""]
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out + [""]


# ---------------------------------------------------------------- HTML


def render_html(metrics: dict, rows: Sequence[dict]) -> str:
    run = metrics.get("run", {})
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>cxrlm eval: {e(str(run.get('model', '')))}</title><style>{CSS}</style></head><body>",
        f"<p class='disclaimer'>{e(DISCLAIMER)}</p>",
        f"<h1>Evaluation of {e(str(run.get('model', 'a model')))}</h1>",
        "<p><small>"
        + " &middot; ".join(
            f"{e(k)}: {e(str(run[k]))}"
            for k in ("manifest", "split", "n_records", "seed", "prompt_template_version", "finished")
            if k in run
        )
        + "</small></p>",
    ]
    plots = _plots(metrics, rows)
    for task in TASKS:
        if task not in metrics["tasks"]:
            continue
        parts += [f"<h2>{task}</h2>", "<p><small>95% bootstrap intervals (percentile, over items).</small></p>"]
        parts.append(html_table(*metric_table(metrics, task)))
        header, table_rows = comparison_table(metrics, task)
        if table_rows:
            parts += ["<h3>Model vs baselines (paired bootstrap)</h3>", html_table(header, table_rows)]
        if task == Task.CLASSIFY:
            parts += ["<h3>Per label</h3>", f"<p><small>{e(CALIBRATION_LEGEND)}</small></p>"]
            parts.append(html_table(*per_label_table(metrics)))
        parts += [img_tag(png, f"{task} plot") for png in plots.get(task, [])]
    if plots.get("note"):
        parts.append(f"<p><small>{e(plots['note'])}</small></p>")
    parts.append(_samples_html(rows))
    if metrics.get("notes"):
        parts += ["<h2>Notes</h2><ul class='notes'>"] + [f"<li>{e(n)}</li>" for n in metrics["notes"]] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{_cell_class(c)}>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell_class(cell: str) -> str:
    if cell == "yes":
        return " class='yes'"
    return " class='no'" if cell.startswith("no:") else ""


def img_tag(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


# ---------------------------------------------------------------- plots


def _plots(metrics: dict, rows: Sequence[dict]) -> dict:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"note": "Plots left out: matplotlib is not installed (pip install 'cxrlm[eval]')."}
    out: dict[str, list[bytes]] = {}
    classify_rows = [r for r in rows if r["system"] == "model" and r["task"] == Task.CLASSIFY]
    if classify_rows:
        out[Task.CLASSIFY] = [_roc_png(plt, classify_rows), _bars_png(plt, metrics), _reliability_png(plt, classify_rows,
                                                                                                      metrics)]
    return out


def _roc_png(plt, rows: Sequence[dict]) -> bytes:
    truth, score = classify_matrices(rows)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=90)
    for j, name in enumerate(CLASSIFY_LABELS):
        fpr, tpr, _ = roc_curve(truth[:, j], score[:, j])
        if len(fpr):
            ax.plot(fpr, tpr, lw=1.2, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curves (model)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=6, loc="lower right")
    return figure_png(plt, fig)


def _bars_png(plt, metrics: dict) -> bytes:
    systems = {"model": metrics["per_label"].get("model", {}).get(Task.CLASSIFY, {}).get("per_label", {})}
    for name in metrics.get("baselines", {}):
        table = metrics["per_label"].get(f"baseline:{name}", {}).get(Task.CLASSIFY, {}).get("per_label")
        if table:
            systems[name] = table
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), dpi=90, sharey=True)
    y = np.arange(len(CLASSIFY_LABELS))
    height = 0.8 / max(len(systems), 1)
    for k, (system, table) in enumerate(systems.items()):
        for ax, key in zip(axes, ("auroc", "f1")):
            values = [table.get(n, {}).get(key) for n in CLASSIFY_LABELS]
            ax.barh(y + k * height, [v if v is not None else 0 for v in values], height, label=system)
    for ax, title in zip(axes, ("AUROC per label", "F1 per label (threshold 0.5)")):
        ax.set(title=title, xlim=(0, 1))
        ax.set_yticks(y + 0.4 - height / 2, CLASSIFY_LABELS, fontsize=7)
        ax.invert_yaxis()
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return figure_png(plt, fig)


def _reliability_png(plt, rows: Sequence[dict], metrics: dict) -> bytes:
    """Reliability diagrams of the ranked labels: fraction positive against mean probability per bin, the model's
    probabilities and, for a calibrated model, the raw ones; marker area follows the bin's share of items."""
    truth, score = classify_matrices(rows)
    raw = raw_matrix(rows)
    table = metrics["per_label"].get("model", {}).get(Task.CLASSIFY, {}).get("per_label", {})
    names = [n for n in CLASSIFY_LABELS if table.get(n, {}).get("ranked")] or [
        n for n in CLASSIFY_LABELS if table.get(n, {}).get("n")
    ]
    columns = 4
    grid_rows = max(1, math.ceil(len(names) / columns))
    fig, axes = plt.subplots(grid_rows, columns, figsize=(11, 2.8 * grid_rows), dpi=80, squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        j = CLASSIFY_LABELS.index(name)
        series = [("raw", raw, "#999999"), ("calibrated", score, "#c0392b")] if raw is not None else [
            ("model", score, "#1f77b4")]
        for label, matrix, colour in series:
            bins = reliability_bins(truth[:, j], matrix[:, j])
            filled = bins["count"] > 0
            x, y, share = bins["confidence"][filled], bins["frequency"][filled], bins["count"][filled]
            ax.plot(x, y, "-", c=colour, lw=1, label=label)
            ax.scatter(x, y, s=6 + 80 * share / share.sum(), c=colour, zorder=3)
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.7)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{name} (ECE {fmt(table[name].get('ece'))})")
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Reliability: fraction positive vs mean probability, {N_BINS} equal-width bins "
                 "(marker area: share of items)", fontsize=9)
    fig.tight_layout()
    return figure_png(plt, fig)


def figure_png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------- sample grid


def _samples_html(rows: Sequence[dict]) -> str:
    model_rows = [r for r in rows if r["system"] == "model"]
    # items with boxes or text first: they show the most; then labelled-only items fill the grid
    rich = sorted({r["id"] for r in model_rows if r["task"] in (Task.GROUND, Task.REPORT)})
    ids = (rich + sorted({r["id"] for r in model_rows} - set(rich)))[:N_SAMPLES]
    if not ids:
        return ""
    cards = [card for card in (_sample_card(i, [r for r in model_rows if r["id"] == i]) for i in ids) if card]
    legend = (
        f"<p class='legend'>boxes:<span style='background:rgb{REFERENCE_COLOUR}'></span>reference"
        f"<span style='background:rgb{PREDICTED_COLOUR}'></span>predicted</p>"
    )
    return "<h2>Samples</h2>" + legend + "<div class='grid'>" + "".join(cards) + "</div>"


def _sample_card(item_id: str, rows: Sequence[dict]) -> str:
    e = html.escape
    picture = _draw_boxes(rows[0]["image"], [r for r in rows if r["task"] == Task.GROUND])
    parts = [f"<div class='card'><b>{e(item_id)}</b>"]
    if picture:
        parts.append(img_tag(picture, item_id))
    for r in rows:
        if r["task"] == Task.REPORT:
            parts.append(f"<p><b>reference:</b> {e(r['reference']['text'])}</p>")
            parts.append(f"<p><b>predicted:</b> {e(r['prediction']['text'] or '(empty)')}</p>")
        elif r["task"] == Task.CLASSIFY:
            truth = [n for n, v in r["reference"]["labels"].items() if v == 1]
            said = [n for n, p in r["prediction"]["probabilities"].items() if p is not None and p >= 0.5]
            parts.append(f"<p><b>labels:</b> {e(', '.join(truth) or 'none positive')}</p>")
            parts.append(f"<p><b>predicted (p &ge; 0.5):</b> {e(', '.join(said) or 'none')}</p>")
        elif r["task"] == Task.GROUND:
            parts.append(f"<p><b>{e(r['phrase'] or '')}:</b> {len(r['prediction']['boxes'])} predicted box(es)</p>")
    return "".join(parts) + "</div>"


def _draw_boxes(image_path: str, ground_rows: Sequence[dict]) -> bytes | None:
    """The image with reference (green) and predicted (red) boxes, SAMPLE_WIDTH wide; None if it cannot be read."""
    from PIL import ImageDraw

    from cxrlm.errors import CxrlmError
    from cxrlm.io import load_image

    try:
        picture = load_image(image_path).to_pil()
    except (CxrlmError, OSError, ValueError):  # a sample that cannot be shown must not sink the whole report
        return None
    scale = SAMPLE_WIDTH / max(picture.width, 1)  # draw at display size so lines and labels look the same for any image
    picture = picture.resize((SAMPLE_WIDTH, max(1, round(picture.height * scale))))
    draw = ImageDraw.Draw(picture)
    for r in ground_rows:
        for xyxy in r["reference"]["boxes"]:
            draw.rectangle([v * scale for v in xyxy], outline=REFERENCE_COLOUR, width=2)
        for box in r["prediction"]["boxes"]:
            x1, y1, x2, y2 = (v * scale for v in box["xyxy"])
            draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=PREDICTED_COLOUR, width=2)
            draw.text((x1 + 3, y1 + 2), box.get("label") or "", fill=PREDICTED_COLOUR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_reports(out_dir: Path, metrics: dict, rows: Sequence[dict]) -> None:
    out_dir = Path(out_dir)
    (out_dir / "report.md").write_text(render_markdown(metrics), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(metrics, rows), encoding="utf-8")


def compare_markdown(result: dict) -> str:
    """`cxrlm eval compare` output: A - B per metric, with the paired interval and p-value."""
    lines = [f"# {result['run_a']} vs {result['run_b']}", "", f"> {DISCLAIMER}", ""]
    for task, entry in result["tasks"].items():
        lines += [f"## {task} ({entry['n_shared']} shared items)", ""]
        header = ["metric", "A - B [95% CI]", "p", "A better"]
        rows = [
            [name, f"{fmt(r['delta'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]", fmt(r["p_value"], 4), verdict(r)]
            for name, r in entry["metrics"].items()
        ]
        lines += _md_table(header, rows)
    return "\n".join(lines)
