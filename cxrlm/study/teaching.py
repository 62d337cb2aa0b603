"""Teaching mode's feedback: after a resident submits a read, the model's read and the truth side by side.

Per label, three agreements: resident vs truth, model vs truth, resident vs model. The model's call on a label is
its classify probability at cxrlm.batch.PRESENT_AT (0.5), the same call the 'labels' condition shows. A label the
reference leaves blank is not scored against the truth. The running score adds up the reveals of one resident.
A teaching file is one self-contained HTML page per case (image, resident read, model reasoning, truth).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cxrlm import DISCLAIMER
from cxrlm.batch import PRESENT_AT
from cxrlm.pathologies import CHEXPERT14


def model_calls(probabilities: dict[str, float | None]) -> dict[str, bool]:
    """The model's yes/no per CheXpert-14 label from its probabilities."""
    return {name: (probabilities.get(name) or 0.0) >= PRESENT_AT for name in CHEXPERT14}


def agreement(resident: dict[str, bool], model: dict[str, bool], truth: dict[str, int | None] | None) -> dict:
    """Per-label rows and the case's counts. `truth` None (no reference labels) scores resident vs model only."""
    truth = truth or {}
    rows, counts = [], {"labels_scored": 0, "resident_correct": 0, "model_correct": 0, "resident_model_agree": 0}
    for name in CHEXPERT14:
        known = truth.get(name) in (0, 1)
        row = {"label": name, "resident": bool(resident.get(name)), "model": bool(model.get(name)),
               "truth": bool(truth[name]) if known else None}
        row["resident_vs_truth"] = row["resident"] == row["truth"] if known else None
        row["model_vs_truth"] = row["model"] == row["truth"] if known else None
        row["resident_vs_model"] = row["resident"] == row["model"]
        counts["labels_scored"] += known
        counts["resident_correct"] += bool(row["resident_vs_truth"])
        counts["model_correct"] += bool(row["model_vs_truth"])
        counts["resident_model_agree"] += row["resident_vs_model"]
        rows.append(row)
    return {"labels": rows, **counts}


def running_score(agreements: list[dict]) -> dict:
    """The resident's and the model's share of correctly called labels over every case revealed so far."""
    scored = sum(a["labels_scored"] for a in agreements)
    resident = sum(a["resident_correct"] for a in agreements)
    model = sum(a["model_correct"] for a in agreements)
    return {"cases": len(agreements), "labels_scored": scored, "resident_correct": resident, "model_correct": model,
            "resident_accuracy": resident / scored if scored else None,
            "model_accuracy": model / scored if scored else None}


def teaching_file(entries: list[dict], out_dir: Path) -> list[Path]:
    """One HTML page per revealed case (`StudyStore.teaching_entries`), plus index.html; returns the pages."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for entry in entries:
        path = out_dir / f"case-{entry['position']:04d}.html"
        path.write_text(_page(entry), encoding="utf-8")
        pages.append(path)
    links = "".join(f'<li><a href="{p.name}">case {e["position"]}</a></li>' for p, e in zip(pages, entries))
    (out_dir / "index.html").write_text(_html("Teaching file", f"<ul>{links}</ul>"), encoding="utf-8")
    return pages


def _page(entry: dict) -> str:
    images = "".join(f'<img alt="case image" style="max-width:480px" src="data:image/png;base64,'
                     f'{base64.b64encode(Path(p).read_bytes()).decode()}">' for p in entry["images"])
    model = entry["model"]
    rows = "".join(
        f"<tr><td>{html.escape(r['label'])}</td><td>{_yes(r['resident'])}</td><td>{_yes(r['model'])}</td>"
        f"<td>{_yes(r['truth'])}</td></tr>" for r in entry["agreement"]["labels"])
    body = (f"{images}<h2>Resident's read</h2><p>{html.escape(entry['response']['impression'] or '')}</p>"
            f"<table><tr><th>label</th><th>resident</th><th>model</th><th>truth</th></tr>{rows}</table>"
            f"<h2>Model reasoning ({html.escape(model.get('model') or '')})</h2>"
            f"<pre style='white-space:pre-wrap'>{html.escape(model.get('reasoning') or '')}</pre>"
            f"<h2>Model impression</h2><p>{html.escape(model.get('impression') or '')}</p>")
    return _html(f"Teaching case {entry['position']}", body)


def _yes(value) -> str:
    return "" if value is None else ("yes" if value else "no")


def _html(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<p><strong>{html.escape(DISCLAIMER)}</strong></p><h1>{html.escape(title)}</h1>{body}</body></html>")
