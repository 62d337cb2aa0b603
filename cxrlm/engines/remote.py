"""The remote engine: any OpenAI-compatible chat server (vLLM, SGLang, `cxrlm serve`) as the engine.

`generate` sends a streamed chat completion with each image as a base64 PNG data URL (`image_url` part) and
hands the streamed text to `on_text`; `yes_probability` asks for one token with `top_logprobs`. At most
`max_concurrency` requests are in flight per engine; 429, 5xx and connection errors are retried with exponential
backoff (honouring Retry-After), but never once text has been streamed, so a caller never sees text twice.
Standard library only (http.client), so it needs no extra install.

Not here: the chat template. The server applies its own, so the server must host the same checkpoint family as
the profile the prompts are written for.
"""

import base64
import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import urlsplit

from cxrlm.engines.base import EngineCapabilities, Generation
from cxrlm.errors import CxrlmError

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
YES, NO = "yes", "no"


class RemoteError(CxrlmError):
    """The server refused or failed a request, or is unreachable."""


class _Retryable(Exception):
    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


class RemoteEngine:
    """base_url: the server's OpenAI root, e.g. http://gpu-host:8000/v1; model_name: the served model's id."""

    # generate() from many threads, up to max_concurrency requests in flight. Expected-value numbers need the
    # next-token distribution after digit strings the model did not write, which a chat API cannot give: greedy boxes.
    capabilities = EngineCapabilities(concurrent=True, mean_numbers=False, heatmaps=False)

    def __init__(self, base_url: str, model_name: str | None = None, api_key: str | None = None,
                 max_concurrency: int = 8, timeout_s: float = 300.0, retries: int = 4, backoff_s: float = 0.5,
                 input_frame: Callable[[int, int], tuple[int, int]] | None = None):
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"remote engine URL {base_url!r} is not http(s)://host[:port]/v1")
        self.base_url = base_url.rstrip("/")
        self.parts = parts
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        # (width, height) -> the size the model should see. Images are resized to it here, so a model that writes
        # boxes in pixels of its input (Qwen2.5-VL) is mapped back right whatever pixel budget the server uses.
        self.input_frame = input_frame
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.model_name = model_name or self.served_models()[0]

    def served_models(self) -> list[str]:
        body = self._call("GET", "/models", None, stream=False)
        ids = [m.get("id") for m in body.get("data", []) if m.get("id")]
        if not ids:
            raise RemoteError(f"{self.base_url}/models lists no model: pass model_name explicitly")
        return ids

    def generate(self, messages: list[dict], images: list, max_new_tokens: int,
                 on_text: Callable[[str], None] | None = None, temperature: float = 0.0) -> Generation:
        start = time.perf_counter()
        images = self._framed(images)
        body = {"model": self.model_name, "messages": openai_messages(messages, images), "max_tokens": max_new_tokens,
                "temperature": temperature, "stream": True, "stream_options": {"include_usage": True}}
        prepared = time.perf_counter()
        pieces, usage = [], {}
        for event in self._call("POST", "/chat/completions", body, stream=True):
            usage = event.get("usage") or usage
            for choice in event.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    pieces.append(piece)
                    if on_text:
                        on_text(piece)
        return Generation(
            text="".join(pieces),
            new_tokens=int(usage.get("completion_tokens", len(pieces))),
            preprocess_s=prepared - start,
            generate_s=time.perf_counter() - prepared,
            input_size=images[0].size if images and self.input_frame else None,
        )

    def _framed(self, images: list) -> list:
        if self.input_frame is None:
            return list(images)
        return [image.resize(self.input_frame(*image.size)) if self.input_frame(*image.size) != image.size else image
                for image in images]

    def yes_probability(self, conversations: list[list[dict]], images: list[list]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) over the first answer token's top-20 logprobs, one request per conversation."""
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(self._yes_probability, conversations, images))

    def generate_mean_numbers(self, messages, images, max_new_tokens, on_text=None) -> Generation:
        raise NotImplementedError("the remote engine cannot decode expected-value numbers: check "
                                  "engine.capabilities.mean_numbers before calling generate_mean_numbers")

    def saliency(self, messages, images, answer=None, method="gradient"):
        raise NotImplementedError("the remote engine has no gradients: check engine.capabilities.heatmaps "
                                  "before calling saliency")

    def count_tokens(self, texts: list[str]) -> None:
        """None: the server's tokenizer is not at hand (the OpenAI API has no tokenize route)."""
        return None

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def _yes_probability(self, messages: list[dict], images: list) -> float:
        body = {"model": self.model_name, "messages": openai_messages(messages, self._framed(images)), "max_tokens": 1,
                "temperature": 0.0, "logprobs": True, "top_logprobs": 20}
        reply = self._call("POST", "/chat/completions", body, stream=False)
        try:
            top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"the server at {self.base_url} returns no top_logprobs, which classification needs: "
                              "serve the model with vLLM or SGLang, or use engine='hf' or 'fast'") from None
        return yes_share(top)

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None, stream: bool):
        """One request under the concurrency limit, retried on transient failures; a stream yields SSE events."""
        if stream:
            return self._stream(method, path, body)
        with self.slots:
            return self._with_retries(lambda: json.loads(self._open(method, path, body).read() or b"{}"))

    def _stream(self, method: str, path: str, body: dict) -> Iterator[dict]:
        with self.slots:
            response = self._with_retries(lambda: self._open(method, path, body))
            try:
                yield from _sse_events(response)
            except (OSError, HTTPException) as err:  # text may have streamed already: never retried
                raise RemoteError(f"the stream from {self.base_url} broke off: {err}") from None
            finally:
                response.close()

    def _with_retries(self, attempt):
        for tries in range(self.retries + 1):
            try:
                return attempt()
            except _Retryable as err:
                if tries == self.retries:
                    raise RemoteError(f"{self.base_url} failed {tries + 1} times, last: {err}") from None
                time.sleep(err.wait_s if err.wait_s is not None else self.backoff_s * 2 ** tries)

    def _open(self, method: str, path: str, body: dict | None):
        connection_class = HTTPSConnection if self.parts.scheme == "https" else HTTPConnection
        connection = connection_class(self.parts.hostname, self.parts.port, timeout=self.timeout_s)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        try:
            connection.request(method, self.parts.path + path, body=data, headers=headers)
            response = connection.getresponse()
        except (OSError, HTTPException) as err:
            connection.close()
            raise _Retryable(f"cannot reach the server: {err}") from None
        if response.status in RETRY_STATUS:
            retry_after = response.getheader("Retry-After")
            response.read()
            connection.close()
            wait = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise _Retryable(f"HTTP {response.status}", wait)
        if response.status >= 400:
            message = _error_message(response.read())
            connection.close()
            raise RemoteError(f"{self.base_url}{path} answered HTTP {response.status}: {message}")
        return response


def openai_messages(messages: list[dict], images: list) -> list[dict]:
    """HF chat messages with `{"type": "image"}` placeholders -> OpenAI messages with the images as data URLs."""
    placeholders = sum(1 for m in messages if not isinstance(m["content"], str)
                       for part in m["content"] if part["type"] == "image")
    if placeholders != len(images):
        raise RemoteError(f"the messages hold {placeholders} image placeholders but {len(images)} images were given")
    urls = iter(png_data_url(image) for image in images)
    converted = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": "image_url", "image_url": {"url": next(urls)}} if part["type"] == "image"
                       else {"type": "text", "text": part.get("text", "")} for part in content]
        converted.append({"role": message["role"], "content": content})
    return converted


def png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def yes_share(top_logprobs: list[dict]) -> float:
    """Share of "yes" in the yes+no mass of the listed tokens (case and surrounding space ignored); 0.5 if neither."""
    mass = {YES: 0.0, NO: 0.0}
    for entry in top_logprobs:
        word = str(entry.get("token", "")).strip().lower()
        if word in mass:
            mass[word] += math.exp(float(entry["logprob"]))
    total = mass[YES] + mass[NO]
    return mass[YES] / total if total > 0 else 0.5


def _sse_events(response) -> Iterator[dict]:
    """The JSON payloads of a `text/event-stream` response, up to `data: [DONE]`."""
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        event = json.loads(payload)
        if "error" in event:
            raise RemoteError(f"the server reported an error mid-stream: {_error_message(payload.encode())}")
        yield event


def _error_message(raw: bytes) -> str:
    try:
        error = json.loads(raw).get("error", {})
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = None
    return (message or raw.decode("utf-8", "replace")).strip().splitlines()[0][:300] if (message or raw) else "?"
