"""The running server against real clients on loopback: the official openai client, httpx, a short load test.

The tiny checkpoint's text is random, so these test plumbing (formats, storage, limits), not content.
"""

import base64
import io
import json
import threading
import time

import httpx
import jsonschema
import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
from cxrlm.serve.storage import Store
from cxrlm.types import output_schema


def png_bytes(height=96, width=80, seed=0, flat=False) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)
    if flat:  # compresses to almost nothing: tests the pixel cap, not the byte cap
        pixels[:] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve")
    s = Store(f"sqlite:///{path / 'cxrlm.db'}", path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tiny_model, store):
    settings = ServeSettings(max_queue=2, timeout_s=60, max_upload_bytes=200_000, max_pixels=250_000,
                             max_new_tokens=64, rate_per_minute=10_000)
    with serve_in_thread(create_app(tiny_model, store, settings)) as url:
        yield url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def study(http):
    response = http.post("/v1/studies", files={"file": ("Doe^Jane.png", png_bytes(), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()


def completed(store, request_id_or_result):
    result = store.result(request_id_or_result)
    return [e.event for e in store.audit_events(result.request_id)]


def test_openai_client_chat_with_a_data_url_image(server, store, tiny_model):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused-on-loopback", max_retries=0)
    assert [m.id for m in client.models.list()] == [tiny_model.name]
    reply = client.chat.completions.create(
        model=tiny_model.name, max_tokens=6,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(png_bytes(seed=1))}},
            {"type": "text", "text": "Find abnormalities and support devices."}]}],
    )
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason in ("stop", "length")
    extra = reply.model_extra["cxrlm"]
    assert reply.choices[0].message.content == extra["output"]["raw_text"]
    jsonschema.validate(extra["output"], output_schema())
    assert completed(store, extra["result_id"]) == ["started", "completed"]
    stored = store.messages(extra["session_id"])
    assert stored[0] == ("user", "Find abnormalities and support devices.") and stored[-1][0] == "assistant"


def test_openai_client_streams_a_follow_up_on_an_uploaded_study(server, study, store, tiny_model):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": study["url"]}},
                                     {"type": "text", "text": "Find abnormalities."}]},
        {"role": "assistant", "content": "<answer> No Finding </answer>"},
        {"role": "user", "content": "Is there an effusion?"},
    ]
    chunks = list(client.chat.completions.create(model=tiny_model.name, messages=messages, stream=True,
                                                 max_tokens=8))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "length"
    final = chunks[-1].model_extra["cxrlm"]
    assert text.strip() == final["output"]["raw_text"].strip() and final["output"]["timings"]["new_tokens"] == 8
    assert len(store.messages(final["session_id"])) == 4  # the three turns sent, and the answer


def test_task_endpoints_return_the_project_schema(http, study, store):
    for path, extra in (("/v1/cxr/classify", {}), ("/v1/cxr/ground", {"phrase": "right lung"}),
                        ("/v1/cxr/report", {})):
        response = http.post(path, json={"study_id": study["id"], "max_new_tokens": 4, **extra})
        assert response.status_code == 200, response.text
        out = response.json()
        jsonschema.validate(out, output_schema())
        assert out["image_size"] == [study["width"], study["height"]]
        result_id = response.headers["X-Cxrlm-Result-Id"]
        assert http.get(f"/v1/results/{result_id}").json()["output"] == out
        assert completed(store, result_id) == ["started", "completed"]
    export = http.get(f"/v1/results/{result_id}/export", params={"format": "json"})
    assert export.json() == out and "attachment" in export.headers["content-disposition"]


def test_classify_with_a_heatmap_returns_an_overlay_png(http, study):
    import base64
    import io

    from PIL import Image

    body = {"study_id": study["id"], "heatmap": True, "heatmap_label": "effusion"}
    response = http.post("/v1/cxr/classify", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["heatmap_of"] == "Effusion" and out["heatmap"].startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(out["heatmap"].split(",", 1)[1])))
    assert png.size == (study["width"], study["height"])
    plain = http.post("/v1/cxr/classify", json={"study_id": study["id"]}).json()
    assert "heatmap" not in plain
    for bad in ({"heatmap_label": "Elbow"}, {"stream": True}):
        refused = http.post("/v1/cxr/classify", json={**body, **bad})
        assert refused.status_code == 400 and "heatmap" in refused.json()["error"]["message"]


def test_streamed_task_sends_text_then_the_result(http, study):
    with http.stream("POST", "/v1/cxr/report", json={"study_id": study["id"], "max_new_tokens": 5,
                                                      "stream": True}) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    events = [json.loads(line) for line in lines[:-1]]
    assert {e["type"] for e in events[:-1]} == {"text"} and events[-1]["type"] == "result"
    assert events[-1]["output"]["task"] == "report"


def test_exports_go_through_cxrlm_export_or_say_why_not(http, study, tiny_model):
    out = http.post("/v1/cxr/report", json={"study_id": study["id"], "max_new_tokens": 3})
    result_id = out.headers["X-Cxrlm-Result-Id"]
    for fmt in ("md", "fhir", "sr"):
        response = http.get(f"/v1/results/{result_id}/export", params={"format": fmt})
        if response.status_code == 200:
            assert "attachment" in response.headers["content-disposition"] and response.content
            if fmt == "fhir":
                assert response.json()["resourceType"] in ("DiagnosticReport", "Bundle")
            if fmt == "sr":
                assert response.content[128:132] == b"DICM"
        else:  # not installed here (501), or the writer refused this output: one line either way
            assert response.status_code in (500, 501) and response.json()["error"]["message"]
    assert http.get(f"/v1/results/{result_id}/export", params={"format": "pdf"}).status_code == 400
    assert http.get("/v1/results/" + "0" * 32).status_code == 404


def test_uploads_are_checked_and_de_identified(http, store, tmp_path):
    from tests.test_dicom import IDENTITY, make_dicom

    dicom = make_dicom(tmp_path / "x.dcm", np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 4096,
                       bits_stored=12, ViewPosition="PA")
    response = http.post("/v1/studies", files={"file": ("patient.dcm", dicom.read_bytes(), "application/dicom")})
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["metadata"]["Modality"] == "DX" and info["view_position"] == "PA"
    png = http.get(info["image"])
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    with store.engine.connect() as conn:
        from sqlalchemy import text

        dump = "\n".join(str(r) for t in ("studies", "sessions", "messages", "results", "audit_log")
                         for r in conn.execute(text(f"SELECT * FROM {t}")))
    files = b"".join(p.read_bytes() for p in store.studies_dir.iterdir())
    for value in IDENTITY.values():
        assert value not in dump and value.encode() not in files
    assert "Doe^Jane.png" not in dump  # the uploaded file name is not kept either

    too_big = http.post("/v1/studies", files={"file": ("big.png", b"\x89PNG" + b"0" * 300_000, "image/png")})
    assert too_big.status_code == 413
    too_many_pixels = http.post("/v1/studies", files={"file": ("wide.png", png_bytes(600, 600, flat=True), "image/png")})
    assert too_many_pixels.status_code == 400 and "pixels" in too_many_pixels.json()["error"]["message"]
    not_an_image = http.post("/v1/studies", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert not_an_image.status_code == 400 and "/tmp" not in not_an_image.json()["error"]["message"]


def test_bad_requests_get_openai_style_errors(http, study):
    cases = [
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "no image"}]}, 400),
        ("/v1/chat/completions", {"messages": []}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "cxrlm://study/" + "f" * 32}},
            {"type": "text", "text": "x"}]}]}, 404),
        ("/v1/cxr/ground", {"study_id": study["id"]}, 400),  # no phrase
        ("/v1/cxr/report", {}, 400),  # neither study nor image
        ("/v1/cxr/report", {"image": "http://example.org/x.png"}, 400),
    ]
    for path, body, status in cases:
        response = http.post(path, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]


def test_health_readiness_openapi_and_viewer(http):
    from openapi_spec_validator import validate

    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["database"] and ready["worker"]
    spec = http.get("/openapi.json").json()
    validate(spec)
    assert {"/v1/chat/completions", "/v1/studies", "/v1/cxr/report", "/v1/results/{result_id}/export"} <= set(
        spec["paths"])
    page = http.get("/").text
    assert "viewer.js" in page and 'id="banner"' in page
    assert "access-control-allow-origin" not in http.options(
        "/v1/models", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}).headers


def test_client_disconnect_stops_generation(server, study, store, http):
    body = {"study_id": study["id"], "max_new_tokens": 64, "stream": True}
    with httpx.Client(base_url=server, timeout=30) as client, \
            client.stream("POST", "/v1/cxr/report", json=body) as response:
        next(response.iter_lines())  # generation has started; now hang up
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ends = [e for e in store.audit_events() if e.endpoint == "/v1/cxr/report" and e.event == "cancelled"]
        if ends:
            break
        time.sleep(0.1)
    assert ends, "the disconnect did not cancel the generation"
    assert ends[-1].timings["run_s"] < 10


def test_timeouts_keys_and_a_full_queue(tiny_model, tmp_path, monkeypatch):
    predict = tiny_model.predict

    def paced(*args, on_text, **kwargs):  # 400 pieces take at least 4 s, past the 1 s timeout on any host
        return predict(*args, on_text=lambda piece: (time.sleep(0.01), on_text(piece)), **kwargs)

    monkeypatch.setattr(tiny_model, "predict", paced)
    store = Store(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)
    _key_id, key = store.add_key("ci")
    settings = ServeSettings(max_queue=1, timeout_s=1.0, max_new_tokens=400, require_keys=True,
                             rate_per_minute=10_000)
    auth = {"Authorization": f"Bearer {key}"}
    with serve_in_thread(create_app(tiny_model, store, settings)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/v1/models").status_code == 401
        assert http.get("/v1/models", headers={"Authorization": "Bearer cxrlm-0000-wrong"}).status_code == 401
        assert http.get("/v1/models", headers=auth).status_code == 200
        study = http.post("/v1/studies", headers=auth, files={"file": ("a.png", png_bytes(), "image/png")}).json()
        body = {"study_id": study["id"], "phrase": "lung", "max_new_tokens": 400}
        statuses = []

        def call():
            statuses.append(http.post("/v1/cxr/ground", json=body, headers=auth))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(30)
        codes = sorted(r.status_code for r in statuses)
        assert 429 in codes and 504 in codes and set(codes) <= {429, 504}, codes
        assert all(r.headers["Retry-After"].isdigit() for r in statuses if r.status_code == 429)
    events = [e.event for e in store.audit_events()]
    assert "timeout" in events and events.count("started") == events.count("timeout")
    store.close()


def test_rate_limit_answers_429_with_retry_after(tiny_model, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    with serve_in_thread(create_app(tiny_model, store, ServeSettings(rate_per_minute=3))) as url:
        codes = [httpx.get(f"{url}/v1/models") for _ in range(5)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
    assert int(codes[-1].headers["Retry-After"]) >= 1
    store.close()


def test_load_only_clean_429s_and_every_accepted_request_is_stored(server, study, store):
    """20 concurrent clients for a few seconds against the tiny model (bounded for CI)."""
    outcomes, stop_at = [], time.monotonic() + 6

    def client():
        with httpx.Client(base_url=server, timeout=60) as http:
            while time.monotonic() < stop_at:
                r = http.post("/v1/cxr/ground", json={"study_id": study["id"], "phrase": "heart",
                                                      "max_new_tokens": 2})
                outcomes.append(r)
                if r.status_code == 429:
                    time.sleep(0.2)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    codes = [r.status_code for r in outcomes]
    print(f"load: {len(codes)} requests, {codes.count(200)} accepted, {codes.count(429)} answered 429")
    assert set(codes) <= {200, 429}, sorted(set(codes))
    accepted = [r for r in outcomes if r.status_code == 200]
    assert accepted and codes.count(429) > 0
    for r in accepted:
        assert completed(store, r.headers["X-Cxrlm-Result-Id"]) == ["started", "completed"]
        assert r.headers["content-type"].startswith("application/json")
    assert all("Retry-After" in r.headers for r in outcomes if r.status_code == 429)
