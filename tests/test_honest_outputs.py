"""Honest outputs (issue 37 item 5): structured sections only from answers that are what they claim, and the model's
own notice (a demonstration model says so) on every surface: CLI text and JSON, md, FHIR, SR, the API."""

import base64
import io
import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pydicom
import pytest
from scripted_engine import ScriptedEngine

from cxrlm.models.base import CxrModel
from cxrlm.models.profiles import PROFILES, resolve_profile
from cxrlm.structured import (
    build_structured_report,
    check_differentials,
    not_a_diagnosis,
    recommendations,
    split_sentences,
)
from cxrlm.types import ModelOutput, output_schema

TINY = Path(__file__).resolve().parents[1] / "weights" / "cxrlm-tiny"
NOTICE = "demonstration model: near-chance accuracy"
REASONING = "<think>The lungs show an opacity.</think><answer>Pneumonia</answer>"
REPORT = "Findings: The findings suggest pneumonia.\nImpression: Pneumonia."
YES_LEFT_OUT = "differentials left out: the answer 'Yes' is not a list of diagnoses"


def demo_model(*texts: str) -> CxrModel:
    """A scripted NV-Reason model whose profile declares a notice, as cxrlm-tiny's cxrlm.json does."""
    return CxrModel("demo", replace(PROFILES["nv-reason-cxr"], notice=NOTICE), ScriptedEngine(*texts))


@pytest.fixture
def png(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 160), dtype=np.uint8)).save(path)
    return path


def run_cli(monkeypatch, model, argv) -> int:
    from cxrlm.cli import infer, main

    monkeypatch.setattr(infer, "load_model_from_args", lambda args: model)
    return main(argv)


def sr_comments(data: bytes) -> list[str]:
    sr = pydicom.dcmread(io.BytesIO(data))
    return [item.TextValue for item in sr.ContentSequence if item.ValueType == "TEXT"
            and item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]


# --- which answers fill a section -----------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, warning", [
    ("Yes", YES_LEFT_OUT),
    ("<think>Hmm.</think><answer>No.</answer>", "the answer 'No.' is not a list of diagnoses"),
    ("Provide differentials.", "is not a list of diagnoses"),
    (REPORT, "is a report, not a list of diagnoses"),
    ("The findings suggest pneumonia.", "is not a list of diagnoses"),
    ("The heart and lungs were reviewed systematically and nothing else can be said about them.", "not a list"),
])
def test_an_answer_that_lists_no_diagnosis_leaves_the_section_out(answer, warning):
    kept, warnings = check_differentials(answer, ["The findings suggest pneumonia."])
    assert kept == [] and len(warnings) == 1 and warning in warnings[0]


def test_a_list_keeps_its_diagnoses_and_names_what_it_dropped():
    kept, warnings = check_differentials("1. Pneumonia - likely\n2. Aspiration - possible\n3. Yes\n4. Fibrosis")
    assert [(d.diagnosis, d.likelihood) for d in kept] == [("Pneumonia", "high"), ("Aspiration", "medium"),
                                                          ("Fibrosis", None)]
    assert warnings == ["differentials: left out items that are not diagnoses: 'Yes' (a yes/no answer)"]
    assert check_differentials("Clear lungs. \\boxed{Edema, heart failure}")[0][1].diagnosis == "heart failure"
    assert not_a_diagnosis("no pneumothorax") == "a negated finding"
    assert not_a_diagnosis("the cat") == "no known diagnosis"


def test_a_recommendation_names_an_action_not_a_finding():
    sentences = ["The findings suggest pneumonia.", "Recommend follow-up radiograph in 6 weeks.",
                 "Clinical correlation is advised."]
    items, warnings = recommendations("1. None\n2. CT of the chest", sentences)
    assert items == ["CT of the chest", "Recommend follow-up radiograph in 6 weeks.",
                     "Clinical correlation is advised."]
    assert warnings == ["recommendations: left out 'None' (no action to take)"]


def test_stored_differentials_follow_the_same_rules():
    """The server's exports build from the stored output alone: its differentials list is checked the same way."""
    output = ModelOutput(task="report", model="m", raw_text="", findings="The findings suggest pneumonia.",
                         differentials=["Yes"])
    report = build_structured_report(output)
    assert report.differentials == [] and report.recommendations == []
    assert "differentials left out: the answer '- Yes' is not a list of diagnoses" in report.warnings


# --- the CLI's exports (scripted: the differentials answer is "Yes") ---------------------------------------------

def test_cli_exports_leave_out_an_unparseable_differentials_answer(monkeypatch, png, tmp_path):
    pytest.importorskip("fhir.resources")
    pytest.importorskip("highdicom")
    for fmt in ("md", "fhir", "sr"):
        out = tmp_path / f"report.{fmt}"
        model = demo_model(REASONING, REPORT, "Yes")
        assert run_cli(monkeypatch, model, ["report", str(png), "--export", fmt, "--out", str(out)]) == 0
        assert model.engine.calls[-1][-1]["content"][-1]["text"] == "Provide differentials."  # it was asked
        if fmt == "sr":
            comments = sr_comments(out.read_bytes())
            assert f"Warning: {YES_LEFT_OUT}" in comments and any(NOTICE in c for c in comments)
            continue
        if fmt == "fhir":
            resource = json.loads(out.read_text())
            extensions = {e["url"].rsplit(":", 1)[1]: e["valueString"] for e in resource["extension"]}
            assert extensions["model-notice"].startswith(NOTICE) and extensions["warning"] == YES_LEFT_OUT
            assert NOTICE in resource["text"]["div"] and YES_LEFT_OUT.replace("'", "&#x27;") in resource["text"]["div"]
            markdown = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
        else:
            markdown = out.read_text()
        assert "## Differentials" not in markdown and "- Yes" not in markdown
        assert "## Recommendations" not in markdown  # "The findings suggest pneumonia." is a finding
        assert f"- {YES_LEFT_OUT}" in markdown and f"> **Model notice:** {NOTICE}" in markdown


def test_cli_json_export_carries_the_notice_and_the_warning(monkeypatch, png, tmp_path):
    from cxrlm.structured import validate_structured

    out = tmp_path / "report.json"
    assert run_cli(monkeypatch, demo_model(REASONING, REPORT, "None."), ["report", str(png), "--export", "json",
                                                                        "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    validate_structured(data)
    assert data["model_notice"] == NOTICE and data["differentials"] == [] and data["recommendations"] == []
    assert "differentials left out: the answer 'None.' is not a list of diagnoses" in data["warnings"]


def test_cli_export_keeps_a_real_differentials_list(monkeypatch, png, tmp_path):
    out = tmp_path / "report.md"
    model = demo_model(REASONING, REPORT, "1. Pneumonia - likely\n2. Aspiration - possible")
    # --gate off: the synthetic test image is no radiograph, and the gate's warning would be a section of its own
    assert run_cli(monkeypatch, model, ["report", str(png), "--export", "md", "--out", str(out), "--gate", "off"]) == 0
    markdown = out.read_text()
    assert "## Differentials\n\n- Pneumonia (likelihood: high)\n- Aspiration (likelihood: medium)" in markdown
    assert "## Warnings" not in markdown


# --- the notice on every surface ------------------------------------------------------------------------------------

def test_notice_on_cli_text_and_json(monkeypatch, png, capsys):
    assert run_cli(monkeypatch, demo_model(REASONING, REPORT), ["report", str(png)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[1] == f"[model notice: {NOTICE}]"
    assert run_cli(monkeypatch, demo_model(REASONING, REPORT), ["report", str(png), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_notice"] == NOTICE
    jsonschema.validate(data, output_schema())
    jsonschema.validate({k: v for k, v in data.items() if k != "model_notice"}, output_schema())  # 1.1 without it
    assert run_cli(monkeypatch, demo_model("x"), ["report", str(png)]) == 0  # no notice: no line
    run_cli(monkeypatch, CxrModel("plain", PROFILES["nv-reason-cxr"], ScriptedEngine("x")), ["report", str(png)])
    assert "model notice" not in capsys.readouterr().out.split("model: plain")[1]


def test_shipped_demo_model_declares_its_notice():
    if not (TINY / "config.json").is_file():
        pytest.skip("weights/cxrlm-tiny is not present")
    assert resolve_profile(TINY).notice.startswith("demonstration model: near-chance accuracy")


def test_notice_in_api_responses_and_exports(tmp_path):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from PIL import Image

    from cxrlm.serve.app import create_app, serve_in_thread
    from cxrlm.serve.storage import Store

    buffer = io.BytesIO()
    Image.fromarray(np.full((96, 80), 90, np.uint8)).save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path)
    model = demo_model(REASONING, REPORT)
    with serve_in_thread(create_app(model, store)) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/v1/disclaimer").json()["model_notice"] == NOTICE
        response = http.post("/v1/cxr/report", json={"image": image})
        assert response.status_code == 200 and response.json()["model_notice"] == NOTICE
        result_id = response.headers["X-Cxrlm-Result-Id"]
        assert http.get(f"/v1/results/{result_id}").json()["output"]["model_notice"] == NOTICE
        markdown = http.get(f"/v1/results/{result_id}/export", params={"format": "md"}).text
        assert f"> **Model notice:** {NOTICE}" in markdown and "## Recommendations" not in markdown
    store.close()


# --- the shipped cxrlm-tiny on a real NIH radiograph ----------------------------------------------------------------

def test_cxrlm_tiny_report_exports_hold_no_section_from_an_unparseable_answer(fixture_pngs):
    """The real demo model, its real answers: every differential and recommendation exported passes the rules, an
    answer that fails them is named in a warning, and the notice is on md, FHIR and SR."""
    pytest.importorskip("fhir.resources")
    pytest.importorskip("highdicom")
    if not (TINY / "model.safetensors").is_file() or not fixture_pngs:
        pytest.skip("weights/cxrlm-tiny or the NIH fixture images are not present")
    from cxrlm.chat import Session
    from cxrlm.export import export
    from cxrlm.io import load_study
    from cxrlm.models import load_model
    from cxrlm.prompts.templates import task_prompt

    model = load_model(TINY, device="cpu")
    study = load_study([fixture_pngs[0]])
    session = Session(model, study)
    out = session.report()
    answer = session.ask(task_prompt(model.dialect, "differentials")).raw_text
    report = build_structured_report(out, study, differentials_text=answer)
    kept, warnings = check_differentials(answer, split_sentences(out.findings or ""))
    assert [d.diagnosis for d in report.differentials] == [d.diagnosis for d in kept]
    assert all(not_a_diagnosis(d.diagnosis) is None for d in report.differentials)
    assert set(warnings) <= set(report.warnings)
    if not kept:
        assert any(w.startswith("differentials left out: the answer") for w in report.warnings)
    markdown = export(out, "md", study, differentials_text=answer)
    assert ("## Differentials" in markdown) == bool(kept)
    assert all(f"- {w}" in markdown for w in warnings)
    assert "demonstration model" in markdown.split("# Chest radiograph")[0]
    resource = json.loads(export(out, "fhir", study, differentials_text=answer))
    assert any(e["url"].endswith("model-notice") for e in resource["extension"])
    fhir_markdown = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
    assert ("## Differentials" in fhir_markdown) == bool(kept)
    comments = sr_comments(export(out, "sr", study, differentials_text=answer))
    assert any("demonstration model" in c for c in comments)
    assert all(f"Warning: {w}" in comments for w in warnings)
