"""The remote engine against a recorded fake of an OpenAI-compatible server (loopback only, no model).

The fake speaks the streaming chat-completions format (SSE `data:` chunks, a usage chunk, `data: [DONE]`) the way
vLLM does, and can be told to fail, so retries, the concurrency limit and error messages are checked too. One
integration test drives the real `cxrlm serve` app with the tiny model.
"""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from cxrlm.engines.remote import RemoteEngine, RemoteError, openai_messages, yes_share

REPLY = ("The lungs ", "are clear. ", "No effusion.")


class FakeServer:
    """A scripted OpenAI server: `failures` are statuses answered before succeeding; `bodies` records requests."""

    def __init__(self, logprobs=True, delay_s=0.0):
        self.logprobs, self.delay_s = logprobs, delay_s
        self.failures: list[int] = []
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._json(200, {"object": "list", "data": [{"id": "fake-cxr", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append(body)
                    failure = fake.failures.pop(0) if fake.failures else None
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    if failure == 400:
                        self._json(400, {"error": {"message": "max_tokens is too large", "type": "invalid"}})
                    elif failure:
                        self._json(failure, {"error": {"message": "busy"}}, {"Retry-After": "0"})
                    elif body.get("stream"):
                        self._stream()
                    else:
                        self._logprobs()
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in REPLY:
                    self._event({"object": "chat.completion.chunk",
                                 "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                self._event({"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 7}})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, event):
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()

            def _logprobs(self):
                choice = {"index": 0, "message": {"role": "assistant", "content": "Yes"}, "finish_reason": "length"}
                if fake.logprobs:
                    top = [{"token": "Yes", "logprob": -0.2}, {"token": " no", "logprob": -1.8},
                           {"token": "No", "logprob": -3.0}, {"token": "Maybe", "logprob": -4.0}]
                    choice["logprobs"] = {"content": [{"token": "Yes", "logprob": -0.2, "top_logprobs": top}]}
                self._json(200, {"object": "chat.completion", "choices": [choice]})

            def _json(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _image(color=128):
    return Image.new("L", (48, 40), color).convert("RGB")


def _messages():
    return [{"role": "system", "content": [{"type": "text", "text": "You are an expert radiologist."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the findings."}]}]


def test_generate_streams_text_and_sends_the_image_as_a_png_data_url():
    with FakeServer() as fake:
        engine = RemoteEngine(fake.url, timeout_s=10)
        pieces = []
        out = engine.generate(_messages(), [_image()], 64, on_text=pieces.append)
        assert engine.model_name == "fake-cxr"
        assert pieces == list(REPLY) and out.text == "".join(REPLY) and out.new_tokens == 7
        assert out.input_size is None  # no input_frame: the server's resize is unknown
        body = fake.bodies[-1]
        assert body["stream"] and body["max_tokens"] == 64 and body["model"] == "fake-cxr"
        part = body["messages"][1]["content"][0]
        url = part["image_url"]["url"]
        assert part["type"] == "image_url" and url.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (48, 40)


def test_transient_failures_are_retried_with_backoff():
    with FakeServer() as fake:
        fake.failures = [503, 429, 502]
        engine = RemoteEngine(fake.url, model_name="fake-cxr", retries=3, backoff_s=0.01)
        assert engine.generate(_messages(), [_image()], 8).text == "".join(REPLY)
        assert len(fake.bodies) == 4


def test_retries_run_out_with_a_one_line_error():
    with FakeServer() as fake:
        fake.failures = [503] * 5
        engine = RemoteEngine(fake.url, model_name="fake-cxr", retries=2, backoff_s=0.01)
        with pytest.raises(RemoteError, match="failed 3 times, last: HTTP 503"):
            engine.generate(_messages(), [_image()], 8)


def test_a_client_error_is_not_retried_and_says_why():
    with FakeServer() as fake:
        fake.failures = [400]
        engine = RemoteEngine(fake.url, model_name="fake-cxr", backoff_s=0.01)
        with pytest.raises(RemoteError, match="HTTP 400: max_tokens is too large"):
            engine.generate(_messages(), [_image()], 10**6)
        assert len(fake.bodies) == 1


def test_unreachable_server_fails_after_retries():
    with FakeServer() as fake:
        url = fake.url
    engine_url = url  # the port is closed now
    with pytest.raises(RemoteError, match="cannot reach the server"):
        RemoteEngine(engine_url, model_name="x", retries=1, backoff_s=0.01, timeout_s=2).generate(
            _messages(), [_image()], 4)


def test_concurrency_is_capped():
    with FakeServer(delay_s=0.15) as fake:
        engine = RemoteEngine(fake.url, model_name="fake-cxr", max_concurrency=2)
        threads = [threading.Thread(target=engine.generate, args=(_messages(), [_image()], 4)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert fake.max_in_flight == 2 and len(fake.bodies) == 6


def test_yes_probability_from_top_logprobs():
    with FakeServer() as fake:
        engine = RemoteEngine(fake.url, model_name="fake-cxr")
        probs = engine.yes_probability([_messages(), _messages()], [[_image()], [_image(7)]])
        import math

        yes, no = math.exp(-0.2), math.exp(-1.8) + math.exp(-3.0)
        assert probs == pytest.approx([yes / (yes + no)] * 2)
        assert fake.bodies[-1]["logprobs"] is True and fake.bodies[-1]["max_tokens"] == 1


def test_server_without_logprobs_gets_a_clear_error():
    with FakeServer(logprobs=False) as fake:
        engine = RemoteEngine(fake.url, model_name="fake-cxr")
        with pytest.raises(RemoteError, match="no top_logprobs"):
            engine.yes_probability([_messages()], [[_image()]])


def test_bad_urls_and_shapes():
    with pytest.raises(RemoteError, match="not http"):
        RemoteEngine("ftp://host/v1", model_name="x")
    assert yes_share([{"token": "maybe", "logprob": -0.1}]) == 0.5
    converted = openai_messages([{"role": "user", "content": "plain text"}], [])
    assert converted == [{"role": "user", "content": "plain text"}]
    with pytest.raises(RemoteError, match="1 image placeholders but 0 images"):
        openai_messages(_messages(), [])


def test_load_model_with_a_url_gives_a_remote_cxr_model():
    from cxrlm.models import load_model

    with FakeServer() as fake:
        model = load_model(fake.url, engine="remote")
        assert isinstance(model.engine, RemoteEngine) and model.profile.name == "nv-reason-cxr"
        out = model.engine.generate(_messages(), [_image()], 8)
        assert out.text == "".join(REPLY)
        # Qwen2.5-VL boxes are pixels of its input: the client sends exactly that frame and reports it.
        url = fake.bodies[-1]["messages"][1]["content"][0]["image_url"]["url"]
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size
        assert sent == out.input_size and sent[0] % 28 == 0 and sent[1] % 28 == 0 and sent[0] > sent[1]


def test_against_cxrlm_serve(tiny_model, tmp_path):
    """The real server app with the tiny model: the remote engine's request is one it accepts and streams."""
    pytest.importorskip("fastapi")
    from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
    from cxrlm.serve.storage import Store

    store = Store(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    try:
        with serve_in_thread(create_app(tiny_model, store, ServeSettings(max_new_tokens=16))) as url:
            engine = RemoteEngine(url + "/v1", timeout_s=60)
            pieces = []
            user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
            out = engine.generate(user, [_image()], 8, on_text=pieces.append)
            assert "".join(pieces) == out.text and out.new_tokens >= 1
    finally:
        store.close()
