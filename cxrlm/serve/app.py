"""The FastAPI application: OpenAI-compatible chat, CXR task endpoints, study upload, results, exports, viewer.

Every model call goes through the single ModelWorker (one thread, bounded queue): a request takes its place in the
queue before its images are decoded, so a full queue answers 429 with Retry-After at once and leaves nothing
behind; a request past its deadline gets 504, a client that disconnects stops its generation. The job writes its
`started` audit row before the model runs and its terminal row after (storage.py). Every bound on a request (body
bytes, text characters and tokens, images) is checked before decoding, and refused with a 4xx that names the
`cxrlm serve` option raising it. Uploads are decoded in memory: no file holding DICOM tags is ever written. Not
here: keys and rate limits (security.py), the OpenAI wire shapes (openai_format.py), the command line
(cxrlm/cli/serve.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from cxrlm import DISCLAIMER, __version__
from cxrlm.errors import InputError
from cxrlm.limits import MAX_IMAGES, MAX_PROMPT_TOKENS, MAX_TEXT_CHARS, too_many_images
from cxrlm.serve import openai_format as oa
from cxrlm.serve.exports import FORMATS, ExportUnavailable, export
from cxrlm.serve.openai_format import errors
from cxrlm.serve.security import LOCAL_KEY_ID, RateLimiter, bearer_token, retry_after_header
from cxrlm.serve.storage import Store, new_id
from cxrlm.serve.study_routes import install as install_study_routes
from cxrlm.serve.worker import Cancelled, Job, ModelWorker, QueueFull, Slot
from cxrlm.types import Study, Task, XrayImage

WEB_DIR = Path(__file__).parent / "web"
View = Annotated[str, Field(max_length=16)]  # PA, AP, LL, RL, LATERAL
DONE = object()  # end of a stream of text pieces
LOG = logging.getLogger("cxrlm.serve")
_SLOT: ContextVar[Slot | None] = ContextVar("cxrlm_queue_slot", default=None)  # this request's place in the queue


@dataclass
class ServeSettings:
    max_queue: int = 8  # jobs waiting for the model, beyond the running one
    timeout_s: float = 300.0  # per request, queueing included
    max_upload_bytes: int = 50_000_000
    max_pixels: int = 40_000_000
    max_new_tokens: int = 1024  # cap on any request's generated tokens
    max_text_chars: int = MAX_TEXT_CHARS  # text per request, all turns together
    max_prompt_tokens: int = MAX_PROMPT_TOKENS  # the same, in the model's tokens (where it has a tokenizer)
    max_images: int = MAX_IMAGES  # images per request: one study's views
    rate_per_minute: int = 120  # per API key; 0 turns it off
    require_keys: bool = False
    cors_origins: tuple[str, ...] = ()
    shutdown_grace_s: float = 30.0
    concurrency: int = 16  # requests run at once when the engine batches them itself (fast, remote); else 1
    # the input gate (cxrlm.gate): on refuses non-chest uploads (400), warn only warns, off skips; $CXRLM_GATE
    gate: str = field(default_factory=lambda: os.environ.get("CXRLM_GATE", "on"))


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None, code=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers, self.code = status, message, kind, headers, code


MODEL_ERRORS = errors(400, 404, 413, 503, 504)  # routes that run the model


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    session_id: str | None = Field(None, description="cxrlm extension: continue a stored session")
    views: list[View] | None = Field(None, max_length=MAX_IMAGES, description="cxrlm extension: the view position "
                                    "(PA, AP, LL) of each image, in order, where its file does not say")


class TaskRequest(BaseModel):
    # Exactly one of study_id, study_ids and image (a null counts as absent, so the schema leaves null out).
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [name]} for name in ("study_id", "study_ids",
                                                                                            "image")]})
    study_id: str = Field(None, min_length=1, description="a study uploaded to /v1/studies")
    image: str = Field(None, min_length=1, description="or the image itself, as a base64 data URL")
    study_ids: list[str] = Field(None, min_length=1, max_length=MAX_IMAGES,
                                 description="or several uploaded views of one study, in order (PA, lateral)")
    views: list[View] | None = Field(None, min_length=1, max_length=MAX_IMAGES,
                                    description="the view position (PA, AP, LL) of each image, in order, where its "
                                                "file does not say; one value applies to every image")
    max_new_tokens: int | None = Field(None, ge=1)
    stream: bool = Field(False, description="server-sent events: text pieces, then the result")
    heatmap: bool = Field(False, description="classify and ground: also `heatmap`, a PNG data URL of which image "
                                             "regions moved the answer, over the image (hf engine; not streamed)")
    heatmap_label: str | None = Field(None, max_length=100, description="classify: the label the heatmap explains "
                                                                        "(default: the most probable)")


class GroundRequest(TaskRequest):
    phrase: str = Field(min_length=1, max_length=200)


def create_app(model, store: Store, settings: ServeSettings | None = None, worker: ModelWorker | None = None):
    settings = settings or ServeSettings()
    threads = settings.concurrency if model.engine.capabilities.concurrent else 1
    worker = worker or ModelWorker(settings.max_queue, threads=threads)
    limiter = RateLimiter(settings.rate_per_minute)

    @asynccontextmanager
    async def lifespan(_app):
        store.close_interrupted()
        store.sweep_uploads()
        yield
        await asyncio.to_thread(worker.stop, settings.shutdown_grace_s)
        store.close()

    app = FastAPI(title="cxrlm", version=__version__, description=DISCLAIMER, lifespan=lifespan)
    app.openapi = lambda: _openapi(app)
    app.state.model, app.state.store, app.state.worker, app.state.settings = model, store, worker, settings
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes * 4 // 3 + 65_536)  # base64 + form framing
    app.add_middleware(CatchAll)  # outermost: catches what the routes and the middleware above did not
    _error_handlers(app)

    async def caller(request: Request) -> str:
        token = bearer_token(request.headers.get("authorization"))
        key_id = LOCAL_KEY_ID
        if settings.require_keys:
            key_id = await asyncio.to_thread(store.verify_key, token) if token else None
            if key_id is None:
                raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer <key>' (create one with "
                               "`cxrlm serve --add-key NAME`)", "authentication_error")
        wait = limiter.acquire(key_id)
        if wait:
            raise ApiError(429, f"rate limit of {settings.rate_per_minute} requests/minute reached: retry later",
                           "rate_limit_error", {"Retry-After": retry_after_header(wait)})
        return key_id

    ctx = _Context(model, store, worker, settings)
    app.state.ctx, app.state.caller = ctx, caller  # for routes added later (pacs_routes.add_pacs_routes)

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        try:
            db_ok = await asyncio.to_thread(store.ping)
        except Exception:  # noqa: BLE001 - any database failure means not ready
            db_ok = False
        ready = db_ok and worker.alive
        body = {"status": "ready" if ready else "not ready", "model": model.name, "database": db_ok,
                "worker": worker.alive, "queue_depth": worker.depth}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/v1/models", responses=errors())
    async def models(_key: str = Depends(caller)):
        return {"object": "list", "data": [{"id": model.name, "object": "model", "created": 0, "owned_by": "cxrlm"}]}

    @app.post("/v1/studies", status_code=201, responses=errors(400, 413))
    async def upload_study(file: Annotated[UploadFile, File()], key: str = Depends(caller)):
        data = await file.read(settings.max_upload_bytes + 1)
        study_id, _image = await asyncio.to_thread(ctx.ingest, data, key)
        return await asyncio.to_thread(ctx.study_info, study_id)

    @app.get("/v1/studies/{study_id}", responses=errors(404))
    async def get_study(study_id: str, key: str = Depends(caller)):
        ctx.own_study(study_id, key)
        return await asyncio.to_thread(ctx.study_info, study_id)

    @app.get("/v1/studies/{study_id}/image.png", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}, "description": "the de-identified 8-bit PNG"},
                        **errors(404)})
    async def study_image(study_id: str, key: str = Depends(caller)):
        return FileResponse(store.study_png(ctx.own_study(study_id, key)), media_type="image/png")

    @app.post("/v1/chat/completions", responses=MODEL_ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request, key: str = Depends(caller)):
        if body.model not in (None, "", "default", model.name):
            raise ApiError(404, f"model {body.model!r} is not served here: use {model.name!r} (GET /v1/models)",
                           code="model_not_found")
        try:
            parsed = oa.parse_messages(body.messages)
        except oa.RequestError as err:
            raise ApiError(400, str(err)) from None
        await ctx.check_prompt([text for _, text in parsed.turns], len(parsed.image_refs))
        with ctx.queue_place():
            study, study_ids = await asyncio.to_thread(ctx.resolve_images, parsed.image_refs, key, body.views)
            limit = ctx.token_cap(body.max_completion_tokens or body.max_tokens)
            run = ctx.chat_job(parsed, study, study_ids, key, limit, body.session_id)
        if body.stream:
            return sse_response(_chat_stream(ctx, run, model.name))
        result_id, out, session_id = await ctx.wait(request, run)
        finish = "length" if (out.timings.new_tokens or 0) >= run.limit else "stop"
        extra = {"result_id": result_id, "session_id": session_id, "study_ids": study_ids, "output": out.to_dict()}
        return oa.completion(f"chatcmpl-{result_id}", model.name, out.raw_text, finish, extra)

    async def task_endpoint(request: Request, body: TaskRequest, key: str, task: Task, phrase=None):
        if sum(map(bool, (body.study_id, body.image, body.study_ids))) != 1:
            raise ApiError(400, "give exactly one of study_id (from POST /v1/studies), study_ids (several views) or "
                                "image (a data URL)")
        ids = body.study_ids or ([body.study_id] if body.study_id else [])
        refs = [f"{oa.STUDY_URL_PREFIX}{study_id}" for study_id in ids] or [body.image]
        explain = _heatmap_subject(body, task, phrase, model) if body.heatmap else None
        await ctx.check_prompt([phrase] if phrase else [], len(refs))
        extra: dict = {}
        with ctx.queue_place():
            study, study_ids = await asyncio.to_thread(ctx.resolve_images, refs, key, body.views)
            run = ctx.task_job(task, study, study_ids, key, ctx.token_cap(body.max_new_tokens), phrase, explain,
                               extra)
        if body.stream:
            return sse_response(task_stream(run))
        result_id, out, _ = await ctx.wait(request, run)
        headers = {"Location": f"/v1/results/{result_id}", "X-Cxrlm-Result-Id": result_id}
        return JSONResponse({**out.to_dict(), **extra}, headers=headers)

    @app.post("/v1/cxr/report", responses=MODEL_ERRORS)
    async def report(body: TaskRequest, request: Request, key: str = Depends(caller)):
        """Reasoning, CheXpert-14 labels, findings and impression (two turns of one conversation)."""
        return await task_endpoint(request, body, key, Task.REPORT)

    @app.post("/v1/cxr/classify", responses=MODEL_ERRORS)
    async def classify(body: TaskRequest, request: Request, key: str = Depends(caller)):
        """A probability for each CheXpert-14 label."""
        return await task_endpoint(request, body, key, Task.CLASSIFY)

    @app.post("/v1/cxr/ground", responses=MODEL_ERRORS)
    async def ground(body: GroundRequest, request: Request, key: str = Depends(caller)):
        """Bounding boxes for a phrase, in the image's own pixels."""
        return await task_endpoint(request, body, key, Task.GROUND, body.phrase)

    @app.get("/v1/results/{result_id}", responses=errors(404))
    async def get_result(result_id: str, key: str = Depends(caller)):
        row = ctx.own_result(result_id, key)
        return {"id": row.id, "task": row.task, "created_at": row.created_at.isoformat(), "study_id": row.study_id,
                "session_id": row.session_id, "output": row.output}

    @app.get("/v1/results/{result_id}/export", responses=errors(400, 404, 501))
    async def export_result(result_id: str, key: str = Depends(caller),
                            format: Annotated[str, Query(json_schema_extra={"enum": list(FORMATS)})] = "json"):
        if format not in FORMATS:
            raise ApiError(400, f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
        row = ctx.own_result(result_id, key)
        try:
            document, media_type, suffix = await asyncio.to_thread(export, row.output, format)
        except ExportUnavailable as err:
            raise ApiError(501, str(err), "not_implemented") from None
        except Exception as err:  # noqa: BLE001 - a writer's failure, reported in one line
            raise ApiError(500, f"the {format} exporter failed: {type(err).__name__}: {err}", "server_error") from None
        headers = {"Content-Disposition": f'attachment; filename="cxrlm-{row.id}{suffix}"'}
        if isinstance(document, dict):
            return JSONResponse(document, media_type=media_type, headers=headers)
        return Response(document, media_type=media_type, headers=headers)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/v1/disclaimer", include_in_schema=False)
    async def disclaimer():
        return {"disclaimer": DISCLAIMER, "model": model.name, "model_notice": model.profile.notice}

    install_study_routes(app, store, settings)  # /v1/study/... and the /study page (reader studies, teaching)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


class _Run:
    """A request on its way through the worker: the job, its future, and its stream of text pieces."""

    def __init__(self, job: Job, pieces: asyncio.Queue, request_id: str, limit: int):
        self.job, self.pieces, self.request_id, self.limit = job, pieces, request_id, limit
        self.future = None


class _Context:
    """What the routes share: the model, store and worker, and the request-to-job plumbing."""

    def __init__(self, model, store: Store, worker: ModelWorker, settings: ServeSettings):
        self.model, self.store, self.worker, self.settings = model, store, worker, settings

    def token_cap(self, asked: int | None) -> int:
        return min(asked or self.settings.max_new_tokens, self.settings.max_new_tokens)

    # Limits -------------------------------------------------------------------------------------------------
    async def check_prompt(self, texts: list[str], n_images: int) -> None:
        """Images, characters, then tokens: each refused before any image is decoded or the model is queued."""
        s = self.settings
        if refusal := too_many_images(n_images, s.max_images, "cxrlm serve --max-images"):
            raise ApiError(400, refusal, code="limit_exceeded")
        if (chars := sum(map(len, texts))) > s.max_text_chars:
            raise ApiError(400, f"{chars:,} characters of text: the limit is {s.max_text_chars:,} "
                           "(cxrlm serve --max-text-chars)", code="limit_exceeded")
        tokens = await asyncio.to_thread(self.count_tokens, texts)
        if tokens is not None and tokens > s.max_prompt_tokens:
            raise ApiError(400, f"{tokens:,} tokens of text: the limit is {s.max_prompt_tokens:,} "
                           "(cxrlm serve --max-prompt-tokens)", code="limit_exceeded")

    def count_tokens(self, texts: list[str]) -> int | None:
        """Tokens of the text with the model's own tokenizer; None for an engine without one (remote)."""
        return self.model.engine.count_tokens(texts)

    @contextmanager
    def queue_place(self):
        """Hold a place in the model queue while the request's images are decoded and its job is submitted: a
        full queue is refused in milliseconds, before anything is decoded or stored."""
        try:
            slot = self.worker.reserve()
        except QueueFull as err:
            raise _queue_full(err) from None
        token = _SLOT.set(slot)
        try:
            yield
        finally:
            _SLOT.reset(token)
            slot.release()  # a no-op once the job took the place

    # Inputs -------------------------------------------------------------------------------------------------
    def ingest(self, data: bytes, key: str) -> tuple[str, XrayImage]:
        """Validate and gate an uploaded file and store its de-identified pixels; the user's file name is never used."""
        image = self.decode(data)
        return self.store.save_study(image, key), image

    def decode(self, data: bytes) -> XrayImage:
        """An uploaded file, decoded from memory and gated: the file itself, with whatever tags it carries, is never written
        to disk."""
        from cxrlm.gate import check_image
        from cxrlm.io.image import load_image_bytes

        if len(data) > self.settings.max_upload_bytes:
            raise ApiError(413, f"the file is larger than the {self.settings.max_upload_bytes:,}-byte upload limit "
                           "(cxrlm serve --max-upload-mb)")
        if not data:
            raise ApiError(400, "the uploaded file is empty: send a PNG, JPEG or DICOM file")
        try:
            image = load_image_bytes(data, "the upload", max_pixels=self.settings.max_pixels)
            check_image(image, self.settings.gate, override="the server's --gate warn")
        except InputError as err:
            raise ApiError(400, str(err)) from None
        return image

    def gate_views(self, study: Study) -> Study:
        """After the request's own views: the gate's view estimate where none was given, then the model's views."""
        from cxrlm.gate import GateRefusal, check_views, fill_views

        fill_views(study.images)
        try:
            check_views(study, self.model.profile.views, self.model.name, self.settings.gate,
                        override="the server's --gate warn")
        except GateRefusal as err:
            raise ApiError(400, str(err)) from None
        return study

    def study_info(self, study_id: str) -> dict:
        row = self.store.study(study_id)
        return {"id": row.id, "url": f"{oa.STUDY_URL_PREFIX}{row.id}", "image": f"/v1/studies/{row.id}/image.png",
                "width": row.width, "height": row.height, "view_position": row.view_position,
                "pixel_spacing": row.pixel_spacing, "metadata": row.image_metadata, "warnings": row.warnings}

    def own_study(self, study_id: str, key: str):
        row = self.store.study(study_id)
        if row is None or row.api_key_id != key:
            raise ApiError(404, f"no study {study_id}: upload one with POST /v1/studies", code="not_found")
        return row

    def own_result(self, result_id: str, key: str):
        row = self.store.result(result_id)
        if row is None or row.api_key_id != key:
            raise ApiError(404, f"no result {result_id}", code="not_found")
        return row

    def resolve_images(self, refs: list[str], key: str, views: list[str] | None = None) -> tuple[Study, list[str]]:
        """The request's study (its images, with `views` applied, then the gate's) and their study ids, in order.
        Every image and view is checked before any upload among them is stored, so a refused request leaves nothing
        behind."""
        found: list[tuple[str | None, XrayImage]] = []
        for ref in refs:
            if ref.startswith(oa.STUDY_URL_PREFIX):
                study_id = ref[len(oa.STUDY_URL_PREFIX):]
                self.own_study(study_id, key)
                found.append((study_id, self.store.load_study_image(study_id)))
            else:
                try:
                    data = oa.decode_data_url(ref, self.settings.max_upload_bytes)
                except oa.RequestError as err:
                    raise ApiError(400, str(err)) from None
                found.append((None, self.decode(data)))
        study = self.gate_views(_study([image for _, image in found], views))
        return study, [study_id or self.store.save_study(image, key) for study_id, image in found]

    # Jobs ---------------------------------------------------------------------------------------------------
    def chat_job(self, parsed: oa.ChatRequest, study: Study, study_ids, key, limit, session_id) -> _Run:
        from cxrlm.chat import Session

        def work(job: Job):
            # The earlier turns are the conversation so far; the images ride on its first user turn.
            session = Session(self.model, study, limit, turns=parsed.turns[:-1])
            return session.ask(parsed.turns[-1][1], on_text=job.emit)  # its task is what the answer carries

        def save(request_id: str, out) -> tuple[str, str]:
            sid = self.store.open_session(session_id, key, study_ids[0], self.model.name)
            new_turns = parsed.turns if sid != session_id else parsed.turns[-1:]
            self.store.add_messages(sid, [*new_turns, ("assistant", out.raw_text)])
            rid = self.store.save_result(request_id=request_id, api_key_id=key, task=Task.CHAT, output=out.to_dict(),
                                         study_id=study_ids[0], session_id=sid)
            return rid, sid

        prompt = {"turns": parsed.turns, "views": _views(study)}
        return self._submit("/v1/chat/completions", work, save, key, study.images, prompt, limit)

    def task_job(self, task: Task, study: Study, study_ids: list[str], key: str, limit: int, phrase=None,
                 explain: str | None = None, extra: dict | None = None) -> _Run:
        """`explain`: also a heatmap of that label (classify; "" for the most probable) or of the box (ground),
        put in `extra` as {"heatmap": PNG data URL, "heatmap_of": subject}; not stored with the result."""

        def work(job: Job):
            out = self.model.predict(study, task, phrase=phrase, max_new_tokens=limit, on_text=job.emit)
            if explain is not None and (task == Task.CLASSIFY or out.boxes):
                extra.update(_heatmap(self.model, study, out, explain or None, phrase))
            return out

        def save(request_id: str, out) -> tuple[str, None]:
            rid = self.store.save_result(request_id=request_id, api_key_id=key, task=task, output=out.to_dict(),
                                         study_id=study_ids[0])
            return rid, None

        prompt = {"task": task, "phrase": phrase, "views": _views(study)}
        return self._submit(f"/v1/cxr/{task}", work, save, key, study.images, prompt, limit)

    def _submit(self, endpoint, work, save, key: str, images: list[XrayImage], prompt: dict, limit: int) -> _Run:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        request_id = new_id()
        input_sha256 = _input_sha256(endpoint, images, prompt)
        submitted = time.monotonic()

        def on_text(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        def execute(job: Job):
            # The started row is committed before the model runs: a server killed now still leaves a trace.
            self.store.audit_start(request_id, api_key_id=key, endpoint=endpoint, model=self.model.name,
                                   template_version=self.model.template_version, input_sha256=input_sha256)
            started = time.monotonic()
            timings = {"queue_s": round(started - submitted, 4)}
            try:
                out = work(job)
            except Cancelled as err:
                timings["run_s"] = round(time.monotonic() - started, 4)
                self.store.audit_end(request_id, err.reason, timings=timings)
                raise
            except Exception as err:
                timings["run_s"] = round(time.monotonic() - started, 4)
                self.store.audit_end(request_id, "failed", timings=timings, detail=f"{type(err).__name__}: {err}")
                raise
            timings["run_s"] = round(time.monotonic() - started, 4)
            output = out.to_dict()
            timings["model"] = output["timings"]
            result_id, session_id = save(request_id, out)
            self.store.audit_end(request_id, "completed", output=output, timings=timings)
            return result_id, out, session_id

        run = _Run(Job(execute, self.settings.timeout_s, on_text), pieces, request_id, limit)
        try:
            run.future = self.worker.submit(run.job, _SLOT.get())
        except QueueFull as err:
            raise _queue_full(err) from None
        run.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(pieces.put_nowait, DONE))
        return run

    async def wait(self, request: Request, run: _Run):
        """The job's result; cancels the job if the client disconnects while waiting."""
        waiting = asyncio.wrap_future(run.future)
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(waiting), 0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    run.job.cancel()
                    raise ApiError(499, "client disconnected", "cancelled") from None
            except Cancelled as err:
                _raise_cancelled(err)


def _queue_full(err: QueueFull) -> ApiError:
    return ApiError(429, "the server is busy (model queue full): retry later, or raise cxrlm serve --max-queue",
                    "rate_limit_error", {"Retry-After": retry_after_header(err.retry_after_s)})


def _heatmap_subject(body: TaskRequest, task: Task, phrase, model) -> str:
    """What the requested heatmap explains, checked before any model work ("": classify's most probable label)."""
    from cxrlm.pathologies import CLASSIFY_LABELS, canonical_name

    if task not in (Task.CLASSIFY, Task.GROUND):
        raise ApiError(400, "heatmap: only classify and ground answers have heatmaps")
    if body.stream:
        raise ApiError(400, "heatmap: not with stream; ask without stream")
    if not model.engine.capabilities.heatmaps:
        raise ApiError(400, f"heatmap: the {type(model.engine).__name__} engine computes no heatmaps "
                            "(serve with --engine hf)")
    if task == Task.GROUND:
        return phrase
    if not body.heatmap_label:
        return ""
    try:
        return canonical_name(body.heatmap_label)
    except KeyError:
        raise ApiError(400, f"heatmap_label {body.heatmap_label!r} is not one of {', '.join(CLASSIFY_LABELS)}"
                       ) from None


def _heatmap(model, study: Study, out, subject: str | None, phrase) -> dict:
    from cxrlm import heatmaps

    if out.task == Task.CLASSIFY:
        subject = subject or max(out.probabilities, key=out.probabilities.get)
    heat = model.heatmap(study, out.task, subject, out.raw_text if out.task == Task.GROUND else None)
    return {"heatmap": heatmaps.data_url(heatmaps.overlay_png(study.images[0].pixels, heat)), "heatmap_of": subject}


def _study(images: list[XrayImage], views: list[str] | None) -> Study:
    """One study of the request's images, with the view positions it gives (one value applies to every image)."""
    from cxrlm.io import assign_views

    if views:
        try:
            assign_views(images, views * len(images) if len(views) == 1 else views)
        except InputError as err:
            raise ApiError(400, f"views: {err}") from None
    return Study(images=images)


def _views(study: Study) -> list[str | None]:
    return [image.view_position for image in study.images]


def _raise_cancelled(err: Cancelled):
    if err.reason == "timeout":
        raise ApiError(504, "the request ran past the server's time limit: ask for fewer tokens or retry later",
                       "timeout") from None
    raise ApiError(503, "the request was cancelled (server shutting down or client gone)", "cancelled") from None


def _input_sha256(endpoint: str, images: list[XrayImage], prompt: dict) -> str:
    digest = hashlib.sha256(endpoint.encode())
    for image in images:
        digest.update(hashlib.sha256(image.pixels.tobytes()).digest())
    digest.update(json.dumps(prompt, sort_keys=True).encode())
    return digest.hexdigest()


async def _pieces(run: _Run):
    """Text pieces as the model makes them; cancels generation if the consumer goes away (client disconnect)."""
    try:
        while (piece := await run.pieces.get()) is not DONE:
            yield piece
    finally:
        if not run.future.done():
            run.job.cancel()


def sse_line(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def _chat_stream(ctx: _Context, run: _Run, model_name: str):
    completion_id = f"chatcmpl-{run.request_id}"
    yield sse_line(oa.chunk(completion_id, model_name, {"role": "assistant", "content": ""}))
    async for piece in _pieces(run):
        yield sse_line(oa.chunk(completion_id, model_name, {"content": piece}))
    try:
        result_id, out, session_id = run.future.result()
    except Exception as err:  # noqa: BLE001 - reported in-stream, as OpenAI does
        yield sse_line(_stream_error(err))
    else:
        finish = "length" if (out.timings.new_tokens or 0) >= run.limit else "stop"
        extra = {"result_id": result_id, "session_id": session_id, "output": out.to_dict()}
        yield sse_line(oa.chunk(completion_id, model_name, {}, finish, extra))
    yield sse_line("[DONE]")


async def task_stream(run: _Run):
    async for piece in _pieces(run):
        yield sse_line({"type": "text", "text": piece})
    try:
        result_id, out, _ = run.future.result()
    except Exception as err:  # noqa: BLE001
        yield sse_line({"type": "error", **_stream_error(err)})
    else:
        yield sse_line({"type": "result", "result_id": result_id, "output": out.to_dict()})
    yield sse_line("[DONE]")


def _stream_error(err: Exception) -> dict:
    if isinstance(err, Cancelled):
        kind = "timeout" if err.reason == "timeout" else "cancelled"
        return oa.error_body(f"generation stopped: {err.reason}", kind)
    return oa.error_body(f"generation failed: {type(err).__name__}: {err}", "server_error")


def sse_response(generator) -> StreamingResponse:
    return StreamingResponse(generator, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse(oa.error_body(err.message, err.kind, err.code), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(oa.error_body(f"{where}: {first.get('msg')}", "invalid_request_error"), status_code=400)


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, less the 422 it adds to every route: validation errors are answered 400 here."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _json_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(oa.error_body(message, kind), status_code=status)


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a one-line 500 and the connection stays usable.

    (An exception handler for `Exception` would run in Starlette's ServerErrorMiddleware, which re-raises after
    answering; uvicorn then closes the connection, and a client's next request on it is reset.) The traceback goes
    to the server's log. A response already under way cannot be replaced: that error still closes the connection.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as err:
            if started:
                raise
            LOG.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            message = f"internal error: {type(err).__name__}: {err}"[:300].splitlines()[0]
            await _json_error(500, message, "server_error")(scope, receive, send)


class BodyLimit:
    """ASGI middleware: refuses request bodies over `max_bytes` with 413, by Content-Length or, for chunked
    bodies, while they stream in (the route then sees a disconnect, and its own reply is dropped). A JSON body
    may also open at most `max_containers` objects and lists: 60 MB of `[{},{},...]` would otherwise be parsed
    into tens of millions of dicts (gigabytes) before any other limit is looked at."""

    def __init__(self, app, max_bytes: int, max_containers: int = 100_000):
        self.app, self.max_bytes, self.max_containers = app, max_bytes, max_containers

    def refusal(self, seen: int, containers: int) -> JSONResponse | None:
        if seen > self.max_bytes:
            return _json_error(413, f"the request body is larger than the {self.max_bytes:,}-byte limit "
                                    "(raise it with cxrlm serve --max-upload-mb)")
        if containers > self.max_containers:
            return _json_error(400, f"the JSON body opens more than {self.max_containers:,} objects or lists: "
                                    "send fewer messages or content parts")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self.refusal(int(length), 0)(scope, receive, send)
        is_json = headers.get(b"content-type", b"").startswith(b"application/json")
        seen, containers, refused = 0, 0, False

        async def limited():
            nonlocal seen, containers, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            body = message.get("body", b"")
            seen += len(body)
            if is_json:  # an over-count (brackets inside strings) only refuses sooner
                containers += body.count(b"{") + body.count(b"[")
            refusal = self.refusal(seen, containers)
            if refusal is not None:
                refused = True
                await refusal(scope, receive, send)
                return {"type": "http.disconnect"}  # stops the route reading; it answers nothing more
            return message

        async def unless_refused(message):
            if not refused:
                await send(message)

        return await self.app(scope, limited, unless_refused)


class serve_in_thread:
    """Run an app with uvicorn on a background thread (notebooks, tests): `with serve_in_thread(app) as url:`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.host = host

    def __enter__(self) -> str:
        import threading

        self.thread = threading.Thread(target=self.server.run, name="cxrlm-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)
