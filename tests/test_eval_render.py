"""Report rendering: Markdown/HTML content, self-containedness, escaping, headless Chromium, and a tiny real model."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from _eval_fixtures import OracleModel, make_dataset

from cxrlm import DISCLAIMER
from cxrlm.eval import render
from cxrlm.eval.runner import EvalConfig, read_rows, run_eval


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    manifest = make_dataset(root / "data")
    metrics = run_eval(OracleModel(manifest), EvalConfig(manifest, root / "run", n_resamples=30, progress=False))
    return root / "run", metrics


def test_markdown_has_disclaimer_tables_and_comparisons(run):
    md = (run[0] / "report.md").read_text()
    assert md.index(DISCLAIMER) < md.index("## report")
    assert re.search(r"\| bleu4 \| 1\.000 \[1\.000, 1\.000\] \|", md)
    assert "### Model vs baselines (paired bootstrap)" in md and "| macro_auroc | label-prior |" in md
    assert "synthetic" in md  # the note on synthetic references


def test_html_is_self_contained(run):
    page = (run[0] / "report.html").read_text()
    assert DISCLAIMER in page[: page.index("<h1>")]
    assert "<script" not in page and not re.search(r"(src|href)=['\"]https?:", page)
    images = re.findall(r"src='data:image/png;base64,", page)
    assert len(images) >= 2 + 1  # ROC + bars, and at least one sample
    assert "<h2>Samples</h2>" in page


def test_html_escapes_model_text(run, tmp_path):
    rows = [r for r in read_rows(run[0] / "predictions.jsonl") if r["task"] == "report" and r["system"] == "model"]
    hostile = [dict(r, prediction={"text": "<img src=x onerror=alert(1)>"}) for r in rows]
    page = render.render_html(run[1], hostile)
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_missing_sample_image_and_no_matplotlib(run, monkeypatch):
    import builtins

    rows = [dict(r, image="/nonexistent.png") for r in read_rows(run[0] / "predictions.jsonl")]
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    page = render.render_html(run[1], rows)
    assert "matplotlib is not installed" in page and "<h2>Samples</h2>" in page


def test_fmt():
    assert render.fmt(None) == "-" and render.fmt(float("nan")) == "-" and render.fmt(0.12345) == "0.123"
    assert render.fmt_ci({"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}) == "0.500 [0.400, 0.600]"
    assert render.fmt_ci({"value": 0.5, "ci_low": None}) == "0.500"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(run, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    command = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        (run[0] / "report.html").as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=90, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and plots, not a blank page
    assert (pixels < 128).mean() > 0.005


@pytest.mark.slow
def test_real_runner_on_a_tiny_checkpoint(tmp_path):
    try:
        from cxrlm.models import load_model
        from cxrlm.models.tiny import build_tiny_checkpoint
    except ImportError as err:
        pytest.skip(f"cxrlm.models is not ready: {err}")
    checkpoint = build_tiny_checkpoint(tmp_path / "tiny")
    model = load_model(checkpoint if checkpoint else tmp_path / "tiny", device="cpu")
    manifest = make_dataset(tmp_path / "data", n_train=3, n_test=3)
    config = EvalConfig(manifest, tmp_path / "run", max_new_tokens=8, n_resamples=20, progress=False)
    metrics = run_eval(model, config)
    assert set(metrics["tasks"]) == {"report", "classify", "ground"}
    assert metrics["run"]["prompt_template_version"]
    probabilities = [
        r["prediction"]["probabilities"]
        for r in read_rows(tmp_path / "run" / "predictions.jsonl")
        if r["system"] == "model" and r["task"] == "classify"
    ]
    assert len(probabilities) == 3 and all(0 <= p <= 1 for row in probabilities for p in row.values())
