"""The OpenAI chat-completions wire format: reading a request's messages and images, writing responses and chunks.

Images arrive as `image_url` parts holding a `data:image/...;base64,` URL or `cxrlm://study/<id>` (a study
uploaded to /v1/studies). Only the first user turn may carry images (that is where cxrlm's chat puts them);
system messages are ignored, as the checkpoint's chat template brings its own. Not here: running the model.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field

from pydantic import BaseModel

STUDY_URL_PREFIX = "cxrlm://study/"


class RequestError(Exception):
    """A malformed request: answered with 400 and this one-line message."""


@dataclass
class ChatRequest:
    turns: list[tuple[str, str]]  # (role, text) of the user/assistant turns, ending with the user's question
    image_refs: list[str] = field(default_factory=list)  # data URLs or cxrlm://study/<id>, from the first user turn


def parse_messages(messages: list[dict]) -> ChatRequest:
    turns, refs = [], []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role not in ("user", "assistant"):
            raise RequestError(f"messages[{index}].role {role!r} is not supported: use system, user or assistant")
        text, images = _content(message.get("content"), index)
        if images and (role != "user" or any(r == "user" for r, _ in turns)):
            raise RequestError(f"messages[{index}] has an image: only the first user message may carry images")
        refs += images
        turns.append((role, text))
    if turns and turns[0][0] != "user":
        raise RequestError("the first non-system message must be from the user (it carries the image)")
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise RequestError("the last message must be a user message with text")
    if not refs:
        raise RequestError("no image given: put an image_url part (data URL or cxrlm://study/<id>) in the first "
                           "user message")
    return ChatRequest(turns=turns, image_refs=refs)


def _content(content, index: int) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(f"messages[{index}].content must be a string or a list of parts")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise RequestError(f"messages[{index}] has an image_url part without a url")
            images.append(url)
        else:
            raise RequestError(f"messages[{index}] has a content part of type {kind!r}: use text or image_url")
    return "\n".join(texts), images


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a base64 `data:` URL; remote http(s) URLs are refused (the server fetches nothing)."""
    if not url.startswith("data:"):
        raise RequestError("image_url must be a data: URL (base64) or cxrlm://study/<id>; the server fetches "
                           "no remote URLs")
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise RequestError("image data URLs must be base64-encoded (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > max_bytes:
        raise RequestError(f"the image is larger than the {max_bytes // 1_000_000} MB upload limit")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("the image data URL is not valid base64") from None


def completion(completion_id: str, model: str, text: str, finish_reason: str, extra: dict) -> dict:
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": None, "cxrlm": extra,
    }


def chunk(completion_id: str, model: str, delta: dict, finish_reason: str | None = None, extra=None) -> dict:
    out = {
        "id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if extra is not None:
        out["cxrlm"] = extra
    return out


def error_body(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# The error shape of every /v1 route, for the OpenAPI document (cxrlm/serve/app.py and its routers).
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error response, in OpenAI's shape."""

    error: ErrorDetail


ERRORS = {
    400: "invalid request: the message says what to change",
    401: "missing or invalid API key",
    404: "no such model, study, result or case for this key",
    409: "out of order: a study case before the earlier ones, a second submit, a reveal before the read",
    413: "request body over the upload limit (cxrlm serve --max-upload-mb)",
    429: "rate limit (--rate-limit) or model queue (--max-queue) full: retry after Retry-After seconds",
    500: "internal error",
    501: "the exporter or its library is not installed",
    503: "cancelled: the server is shutting down",
    504: "the request ran past the server's time limit (--timeout)",
}


def errors(*statuses: int) -> dict:
    """OpenAPI `responses` for these error statuses (401, 429 and 500 can come from any /v1 route)."""
    every = sorted({*statuses, 401, 429, 500})
    return {status: {"model": ErrorBody, "description": ERRORS[status]} for status in every}
