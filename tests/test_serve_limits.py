"""Issue 33, serving side: every bound on a request is refused cleanly and early, refusals leave nothing behind,
errors keep the connection usable, and the OpenAPI document says what the server really answers.

Each test names the numbered case of issue 33 it covers; each failed before the fix.
"""

import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
from cxrlm.serve.storage import Store, StudyRow
from cxrlm.serve.worker import Job
from tests.test_serve_api import data_url, png_bytes

SETTINGS = ServeSettings(max_queue=1, timeout_s=60, max_upload_bytes=200_000, max_pixels=4_000_000,
                         max_new_tokens=4, rate_per_minute=100_000, max_text_chars=2_000, max_prompt_tokens=60,
                         max_images=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("limits")
    s = Store(f"sqlite:///{path / 'cxrlm.db'}", path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def app(tiny_model, store):
    return create_app(tiny_model, store, SETTINGS)


@pytest.fixture(scope="module")
def http(app):
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def chat(text: str, images: list[str]) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}], "max_tokens": 2}


def stored(store) -> tuple[int, int]:
    """(study rows, study PNGs): what a refused request must not add to."""
    with store.session() as db:
        rows = db.query(StudyRow).count()
    return rows, len(list(store.studies_dir.iterdir()))


def refusal(response, status: int, option: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert option in message and "\n" not in message
    return message


def test_1_long_text_is_refused_before_the_model_and_a_50_mb_body_in_a_second(http, store, tiny_model):
    before = stored(store)
    image = data_url(png_bytes())
    refusal(http.post("/v1/chat/completions", json=chat("x" * 2_001, [image])), 400, "--max-text-chars")
    words = " ".join(f"w{i}" for i in range(200))  # under the character cap, over 60 tokens
    assert "tokens" in refusal(http.post("/v1/chat/completions", json=chat(words, [image])), 400,
                               "--max-prompt-tokens")
    assert stored(store) == before  # refused before the image was decoded
    # The case: a 50,000,000-character text ran 203 s and ended in a 500. It is under the body cap of
    # the defaults (50 MB upload -> 66.7 MB of JSON), so the text limit refuses it.
    with serve_in_thread(create_app(tiny_model, store, ServeSettings())) as url:
        body = chat("x" * 50_000_000, [image])
        start = time.monotonic()
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
        elapsed = time.monotonic() - start
    refusal(response, 400, "--max-text-chars")
    assert elapsed < 5, elapsed  # about half a second; before the fix, minutes and a 500
    assert stored(store) == before


def test_7_images_per_message_are_capped(http, store):
    before = stored(store)
    images = [data_url(png_bytes(seed=i)) for i in range(3)]
    refusal(http.post("/v1/chat/completions", json=chat("Findings?", images)), 400, "--max-images")
    # A good image then a broken one: refused, and the good one is not stored either.
    broken = http.post("/v1/chat/completions", json=chat("Findings?", [images[0], data_url(b"not an image")]))
    assert broken.status_code == 400
    assert stored(store) == before
    assert http.post("/v1/chat/completions", json=chat("Findings?", images[:2])).status_code == 200


def test_6_a_full_queue_refuses_in_milliseconds_and_stores_nothing(app, http, store):
    worker, release = app.state.worker, threading.Event()
    running = worker.submit(Job(lambda job: release.wait(30), 60))  # the model is busy ...
    while worker.depth != 1 or worker._running != 1:
        time.sleep(0.01)
    waiting = worker.submit(Job(lambda job: release.wait(30), 60))  # ... and the one queue place is taken
    big = png_bytes(380, 380)  # ~145 KB of noise: decoding it is the work a refusal must not do
    try:
        before, responses = stored(store), []
        for _ in range(5):
            start = time.monotonic()
            responses.append(http.post("/v1/cxr/classify", json={"image": data_url(big)}))
            assert time.monotonic() - start < 1.0
        responses.append(http.post("/v1/chat/completions", json=chat("Findings?", [data_url(big)])))
        assert [r.status_code for r in responses] == [429] * 6
        assert stored(store) == before  # no orphan study row or PNG
        for response in responses:
            refusal(response, 429, "--max-queue")
            assert int(response.headers["Retry-After"]) >= 1
    finally:
        release.set()
    running.result(10), waiting.result(10)
    # A request refused after its place was taken (bad image) gives the place back.
    assert http.post("/v1/cxr/classify", json={"image": data_url(b"not an image")}).status_code == 400
    assert worker.depth == 0
    assert http.post("/v1/cxr/classify", json={"image": data_url(png_bytes())}).status_code == 200


def test_9_an_internal_error_keeps_the_keep_alive_connection(app, http, store, monkeypatch):
    def broken(_study_id):
        raise RuntimeError("the database went away")

    study = http.post("/v1/studies", files={"file": ("a.png", png_bytes(), "image/png")}).json()
    with httpx.Client(base_url=str(http.base_url), timeout=10) as client:
        def local_port(response):
            return response.extensions["network_stream"].get_extra_info("socket").getsockname()[1]

        port = local_port(client.get("/healthz"))
        for _ in range(5):
            monkeypatch.setattr(store, "study", broken)
            failed = client.get(f"/v1/studies/{study['id']}")
            assert failed.status_code == 500
            assert failed.json()["error"]["message"] == "internal error: RuntimeError: the database went away"
            monkeypatch.undo()
            after = client.get(f"/v1/studies/{study['id']}")
            assert after.status_code == 200
            assert local_port(failed) == local_port(after) == port  # the same connection, never closed


def test_chunked_body_over_the_cap_gets_413_and_the_connection_lives_on(http):
    cap = SETTINGS.max_upload_bytes * 4 // 3 + 65_536

    def chunks(total, head=b"", tail=b""):
        yield head
        for _ in range(total // 65_536 + 1):
            yield b"A" * 65_536
        yield tail

    boundary = "cxrlmboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    cases = [
        ("/v1/chat/completions", {"content-type": "application/json"}, chunks(3 * cap, b'{"messages": "', b'"}')),
        ("/v1/studies", {"content-type": f"multipart/form-data; boundary={boundary}"},
         chunks(3 * cap, head, f"\r\n--{boundary}--\r\n".encode())),
    ]
    for path, headers, body in cases:
        response = http.post(path, content=body, headers=headers)  # a generator: sent chunked, no length
        refusal(response, 413, "--max-upload-mb")
        assert http.get("/healthz").status_code == 200


def test_10_openapi_lists_every_status_in_the_error_shape(http):
    from openapi_spec_validator import validate

    spec = http.get("/openapi.json").json()
    validate(spec)
    expected = {  # beyond 401, 429 and 500, which any /v1 route can answer
        ("/v1/models", "get"): set(),
        ("/v1/studies", "post"): {"201", "400", "413"},
        ("/v1/studies/{study_id}", "get"): {"404"},
        ("/v1/studies/{study_id}/image.png", "get"): {"404"},
        ("/v1/chat/completions", "post"): {"400", "404", "413", "503", "504"},
        ("/v1/cxr/report", "post"): {"400", "404", "413", "503", "504"},
        ("/v1/cxr/classify", "post"): {"400", "404", "413", "503", "504"},
        ("/v1/cxr/ground", "post"): {"400", "404", "413", "503", "504"},
        ("/v1/results/{result_id}", "get"): {"404"},
        ("/v1/results/{result_id}/export", "get"): {"400", "404", "501"},
        ("/v1/study/me", "get"): {"400"},  # the reader-study routes (cxrlm/serve/study_routes.py)
        ("/v1/study/next", "get"): {"400"},
        ("/v1/study/cases/{position}", "get"): {"400", "404"},
        ("/v1/study/cases/{position}/images/{index}.png", "get"): {"400", "404"},
        ("/v1/study/cases/{position}/events", "post"): {"400", "404", "409"},
        ("/v1/study/cases/{position}/read", "post"): {"400", "404", "409"},
        ("/v1/study/cases/{position}/reveal", "get"): {"400", "404", "409"},
        ("/v1/study/teaching-file", "get"): {"400", "409"},
    }
    operations = {(path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert set(operations) == set(expected)
    for where, statuses in expected.items():
        responses = operations[where]["responses"]
        success = "201" if "201" in statuses else "200"
        assert set(responses) == statuses | {success, "401", "429", "500"}, where
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (where, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    # And the server answers what the document says: a schema-invalid body is a 400 in the error shape.
    invalid = http.post("/v1/cxr/ground", json={"study_id": 5})
    assert invalid.status_code == 400 and set(invalid.json()["error"]) == {"message", "type", "param", "code"}
