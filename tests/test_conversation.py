"""One conversation under every surface: `cxrlm report`, the server and `cxrlm eval` give the same report; a chat
answer's structured fields come from what its text carries; per-image views reach the prompt."""

import base64
import json

import httpx
import pytest
from _eval_fixtures import make_dataset
from scripted_engine import ScriptedEngine

from cxrlm.chat import Session
from cxrlm.cli import main
from cxrlm.models.base import CxrModel
from cxrlm.models.profiles import PROFILES
from cxrlm.prompts.parsers import answer_task
from cxrlm.types import Box, Label, ModelOutput, Task, Timings

pytest.importorskip("fastapi")

TOKENS = 8  # a few tokens per turn: both turns of the report, quickly
REASON_PROMPT = "Find abnormalities and support devices."  # NV-Reason-CXR's own opening question


def scripted(*texts):
    """Stands in for a trained model: answers each turn with the next text (round and round), streamed."""
    return ScriptedEngine(*texts, input_size=(280, 336), new_tokens=7, cycle=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server over a model whose answers the test writes; yields (url, engine)."""
    from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
    from cxrlm.serve.storage import Store

    path = tmp_path_factory.mktemp("served")
    engine = scripted("<think>Right base opacity.</think><answer>Pneumonia, Pleural Effusion</answer>")
    store = Store(f"sqlite:///{path / 'cxrlm.db'}", path)
    app = create_app(CxrModel("scripted", PROFILES["nv-reason-cxr"], engine), store, ServeSettings(max_new_tokens=32))
    with serve_in_thread(app) as url:
        yield url, engine
    store.close()


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def structured(raw_text, reasoning, labels, findings, impression) -> dict:
    return {"raw_text": raw_text, "reasoning": reasoning, "labels": labels, "findings": findings,
            "impression": impression}


def test_cli_server_and_eval_give_the_same_report(tiny_checkpoint, tiny_model, tmp_path, capsys):
    from cxrlm.eval.runner import EvalConfig, read_rows, run_eval
    from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
    from cxrlm.serve.storage import Store

    manifest = make_dataset(tmp_path / "data", n_train=0, n_test=1)
    image = tmp_path / "data" / "images" / "img000.png"

    assert main(["report", str(image), "--model", str(tiny_checkpoint), "--json",
                 "--max-new-tokens", str(TOKENS)]) == 0
    cli = json.loads(capsys.readouterr().out)

    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path)
    with serve_in_thread(create_app(tiny_model, store, ServeSettings(max_new_tokens=TOKENS))) as url:
        response = httpx.post(f"{url}/v1/cxr/report", json={"image": data_url(image)}, timeout=120)
    store.close()
    assert response.status_code == 200, response.text
    server = response.json()

    run_eval(tiny_model, EvalConfig(manifest, tmp_path / "run", tasks=("report",), split=None,
                                    max_new_tokens=TOKENS, baselines=False, n_resamples=10, progress=False))
    (row,) = read_rows(tmp_path / "run" / "predictions.jsonl")
    prediction = row["prediction"]

    def names(out):
        return [label["name"] for label in out["labels"]]

    expected = structured(cli["raw_text"], cli["reasoning"], names(cli), cli["findings"], cli["impression"])
    assert structured(server["raw_text"], server["reasoning"], names(server), server["findings"],
                      server["impression"]) == expected
    assert structured(row["raw_text"], row["reasoning"], prediction["labels"], prediction["findings"],
                      prediction["impression"]) == expected
    assert cli["task"] == server["task"] == "report"
    # Both turns were asked: the report's raw text is the reasoning answer, a blank line, the report answer.
    from cxrlm.io import load_image

    reasoning = tiny_model.predict(load_image(image), "reason", max_new_tokens=TOKENS).raw_text
    assert cli["raw_text"].startswith(reasoning + "\n\n") and len(cli["raw_text"]) > len(reasoning) + 2


def test_report_streams_exactly_its_raw_text():
    model = CxrModel("scripted", PROFILES["nv-reason-cxr"], scripted(
        "<think>Heart large.</think><answer>Cardiomegaly</answer>", "Findings: Enlarged heart.\nImpression: CM."))
    pieces = []
    out = model.predict(_image(), "report", on_text=pieces.append)
    assert "".join(pieces) == out.raw_text
    assert (out.task, out.reasoning, out.findings, out.impression) == (
        "report", "Heart large.", "Enlarged heart.", "CM.")
    assert [label.name for label in out.labels] == ["Cardiomegaly"] and out.timings.new_tokens == 14


def test_chat_completion_with_the_reason_prompt_returns_the_answer_labels(served, tmp_path):
    url, engine = served
    image = tmp_path / "cxr.png"
    _image().to_pil().save(image)
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(image)}},
        {"type": "text", "text": REASON_PROMPT},
    ]}]}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    output = reply["cxrlm"]["output"]
    assert [label["name"] for label in output["labels"]] == ["Pneumonia", "Pleural Effusion"]
    assert output["task"] == "reason" and output["reasoning"] == "Right base opacity."
    assert engine.calls[-1][-1]["content"][-1]["text"] == REASON_PROMPT


def test_streamed_chat_completion_also_carries_the_labels(served, tmp_path):
    url, _engine = served
    image = tmp_path / "cxr.png"
    _image().to_pil().save(image)
    body = {"stream": True, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": REASON_PROMPT},
    ]}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    final = events[-1]["cxrlm"]["output"]
    assert text == final["raw_text"]
    assert [label["name"] for label in final["labels"]] == ["Pneumonia", "Pleural Effusion"]


@pytest.mark.parametrize("text,after,boxes,task", [
    ("<think>Opacity.</think><answer>Pneumonia</answer>", "", False, Task.REASON),
    ("<think>Cut off before the answer", "", False, Task.REASON),
    ("Edema, cardiomegaly and pleural effusions.", "", False, Task.REASON),
    ("The following abnormalities are present: edema and cardiomegaly.", ":", False, Task.REASON),
    ("Findings: Clear lungs.\nImpression: Normal.", "", False, Task.REPORT),
    ("<think>Look.</think><answer>Findings: Clear lungs.\nImpression: Normal.</answer>", "", False, Task.REPORT),
    ('{"bbox_2d": [1, 2, 30, 40], "label": "right lung"}', "", True, Task.GROUND),
    ("It could be pneumonia or atelectasis; clinical correlation is advised.", "", False, Task.CHAT),
    ("The following abnormalities are present: edema.", "", False, Task.CHAT),  # not this dialect's list
    ("", "", False, Task.CHAT),
])
def test_answer_task_reads_what_the_text_carries(text, after, boxes, task):
    assert answer_task(text, after, boxes) == task


def test_chat_follow_ups_fill_the_fields_their_answers_carry():
    engine = scripted("<think>ok</think><answer>Edema</answer>", "Findings: Hazy lungs.\nImpression: Edema.",
                            "Maybe a viral cause.")
    session = Session(CxrModel("scripted", PROFILES["nv-reason-cxr"], engine), _image())
    first = session.ask("Find abnormalities and support devices.")
    second = session.ask("Write a report.")
    third = session.ask("Why?")
    assert (first.task, [label.name for label in first.labels]) == ("reason", ["Edema"])
    assert (second.task, second.findings, second.impression, second.labels) == ("report", "Hazy lungs.", "Edema.", [])
    assert (third.task, third.labels, third.findings) == ("chat", [], None)


def test_earlier_turns_continue_a_conversation_with_the_images_on_the_first():
    engine = scripted("Edema.")
    session = Session(CxrModel("scripted", PROFILES["nv-reason-cxr"], engine), _image(),
                      turns=[("user", "Anything?"), ("assistant", "Edema.")])
    session.ask("Where?")
    sent = engine.calls[-1]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"][0] == {"type": "image"}
    assert not any(part["type"] == "image" for m in sent[1:] for part in m["content"])


def test_merged_with_keeps_both_turns_and_adds_up_the_work():
    box = Box.from_norm("effusion", (0.1, 0.1, 0.5, 0.5), (100, 100))
    first = ModelOutput(Task.REASON, "m", "r", reasoning=None, answer="Edema, Cardiomegaly",
                        labels=[Label("Edema"), Label("Cardiomegaly")], boxes=[box],
                        timings=Timings(1.0, 0.1, 2.0, 5), warnings=["lateral"])
    second = ModelOutput(Task.REPORT, "m", "f", findings="F.", impression="I.", labels=[Label("Edema")],
                         timings=Timings(1.0, None, 3.0, 6), warnings=["lateral", "cut off"])
    out = first.merged_with(second)
    assert (out.task, out.raw_text, out.reasoning, out.findings, out.impression) == (
        "report", "r\n\nf", "Edema, Cardiomegaly", "F.", "I.")
    assert [label.name for label in out.labels] == ["Edema", "Cardiomegaly"] and out.boxes == [box]
    assert out.timings == Timings(1.0, 0.1, 5.0, 11) and out.warnings == ["lateral", "cut off"]
    assert first.task == Task.REASON and first.raw_text == "r"  # neither turn is edited in place


def test_per_image_views_reach_the_prompt_as_two_views(tmp_path, tiny_checkpoint, capsys):
    frontal, lateral = tmp_path / "pa.png", tmp_path / "lat.png"
    _image().to_pil().save(frontal)
    _image().to_pil().save(lateral)
    common = ["--model", str(tiny_checkpoint), "--max-new-tokens", "2", "--show-prompt", "--json"]
    assert main(["report", str(frontal), str(lateral), "--view", "PA,LL", *common]) == 0
    captured = capsys.readouterr()
    assert "Current study: 2 views (PA, LL)." in captured.err.split("prompt> ")[1]
    warnings = json.loads(captured.out)["warnings"]
    assert not any("lateral" in w for w in warnings)  # a frontal view is there: the lateral one is context

    assert main(["report", str(frontal), str(lateral), "--view", "PA,LL,AP", *common]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--view names 3 views for 2 image(s)" in error[0]


def test_task_requests_take_several_views_with_their_positions(served, tmp_path):
    url, engine = served
    image = tmp_path / "cxr.png"
    _image().to_pil().save(image)
    ids = [httpx.post(f"{url}/v1/studies", files={"file": ("x.png", image.read_bytes(), "image/png")}).json()["id"]
           for _ in range(2)]
    response = httpx.post(f"{url}/v1/cxr/ground", json={"study_ids": ids, "views": ["PA", "LL"], "phrase": "edema"},
                          timeout=60)
    assert response.status_code == 200, response.text
    first_turn = engine.calls[-1][0]["content"]
    assert first_turn[:2] == [{"type": "image"}] * 2 and "Current study: 2 views (PA, LL)." in first_turn[2]["text"]
    bad = httpx.post(f"{url}/v1/cxr/ground", json={"study_ids": ids, "views": ["PA", "XX"], "phrase": "edema"})
    assert bad.status_code == 400 and "unknown view position 'XX'" in bad.json()["error"]["message"]
    for body in ({"study_ids": ids, "views": ["PA" * 50]}, {"study_ids": ids, "study_id": ids[0]},
                 {"study_ids": ids, "views": ["PA", "LL", "AP"]}):
        assert httpx.post(f"{url}/v1/cxr/ground", json={**body, "phrase": "edema"}).status_code == 400, body


def _image():
    import numpy as np

    from cxrlm.types import XrayImage

    pixels = np.random.default_rng(0).integers(0, 256, size=(300, 240), dtype=np.uint8)
    return XrayImage(pixels=pixels, source="synthetic.png")
