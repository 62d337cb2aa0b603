"""The reader-study and teaching routes under /v1/study, and the /study page that uses them.

A reader signs in with their own reader key (`Authorization: Bearer cxrs-...`, always, also on loopback: the key
says who reads) and reaches only their own cases, by place in their reading order (1-based; never a case id). A
case's payload holds what its condition shows and nothing more: `manual` no AI at all, `labels` the labels with
probabilities, `reasoning` the reasoning, report and boxes as well; `teaching` nothing until the read is submitted,
then the reveal (the model's output beside the reference labels, per-label agreement, the running score). The
clock is the store's: a case's time is the active time from its first view to the submit, paused spans left out.
Every JSON body carries the research-use disclaimer; a submit writes an audit pair that holds no case id and no
text. The study itself (design, store, agreement) is cxrlm.study; this module is only its HTTP face.
"""

import asyncio
import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Path as PathParam, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cxrlm import DISCLAIMER
from cxrlm.errors import InputError
from cxrlm.limits import MAX_IMAGES
from cxrlm.pathologies import CHEXPERT14
from cxrlm.serve import openai_format as oa
from cxrlm.serve.openai_format import errors
from cxrlm.serve.security import RateLimiter, bearer_token, retry_after_header
from cxrlm.serve.storage import Store, new_id
from cxrlm.study.store import MAX_IMPRESSION_CHARS, StudyConflict, StudyStore

WEB_DIR = Path(__file__).parent / "web"
MAX_KEY_CHARS = 200  # a reader key is ~45 characters; a longer one is refused before it is looked up
MAX_POSITION = 2_000  # cxrlm.study.manifest.MAX_CASES: no reader has more cases
Likert = Annotated[int, Field(ge=1, le=5)]
Position = Annotated[int, PathParam(ge=1, le=MAX_POSITION, description="1-based place in the reading order")]
ImageIndex = Annotated[int, PathParam(ge=0, lt=MAX_IMAGES, description="which image of the case (0: the first)")]


class StudyError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None, code=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers, self.code = status, message, kind, headers, code


class ClockEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["view", "pause", "resume"]


class Read(BaseModel):
    """One read; the store checks what depends on the condition (the AI questions only where AI was shown)."""

    model_config = ConfigDict(extra="forbid")
    findings: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=len(CHEXPERT14), description="the CheXpert-14 labels the reader marks present")
    impression: str = Field("", max_length=MAX_IMPRESSION_CHARS)
    confidence: Likert
    quality: Likert | None = None
    usefulness: Likert | None = None
    time_saved: Likert | None = None
    safety: Likert | None = None


def install(app: FastAPI, store: Store, settings) -> None:
    """Mount the study routes and the /study page on `app`, with the server's one-line JSON errors."""
    app.state.studies = StudyStore(store.engine, store.data_dir)  # one pool with the server's Store
    app.include_router(router(app.state.studies, store, settings))

    @app.exception_handler(StudyError)
    async def study_error(_request, err: StudyError):
        return JSONResponse(oa.error_body(err.message, err.kind, err.code), status_code=err.status, headers=err.headers)


async def _call(function, *args):
    """A store call off the event loop; its InputError becomes 400 (409 for a case out of order or read twice)."""
    try:
        return await asyncio.to_thread(function, *args)
    except StudyConflict as err:
        raise StudyError(409, str(err), "conflict") from None
    except InputError as err:
        raise StudyError(400, str(err)) from None


def router(studies: StudyStore, store: Store, settings) -> APIRouter:
    limiter = RateLimiter(settings.rate_per_minute)
    api = APIRouter()

    async def signed_in(request: Request):
        """The reader whose key the request carries (401 without a live one); rate-limited per reader."""
        token = bearer_token(request.headers.get("authorization"))
        if not token or len(token) > MAX_KEY_CHARS:
            raise StudyError(401, "sign in with your reader key: send 'Authorization: Bearer <reader key>' (the "
                             "study's coordinator prints them with `cxrlm study create`)", "authentication_error")
        reader = await asyncio.to_thread(studies.verify_reader, token)
        if reader is None:
            raise StudyError(401, "unknown reader key: check it, or ask the study's coordinator for yours",
                             "authentication_error")
        if wait := limiter.acquire(f"reader:{reader.id}"):
            raise StudyError(429, f"rate limit of {settings.rate_per_minute} requests/minute reached: retry later",
                             "rate_limit_error", {"Retry-After": retry_after_header(wait)})
        return reader

    Reader = Annotated[object, Depends(signed_in)]

    async def case_at(reader, position: int) -> dict:
        """The store's payload of the reader's case `position` (404 past the last one)."""
        progress = await _call(studies.progress, reader.id)
        if position > progress["total"]:
            raise StudyError(404, f"no case {position}: your cases run 1 to {progress['total']}", code="not_found")
        return await _call(studies.case_payload, reader.id, position)

    def body(reader, payload: dict) -> dict:
        """Every answer carries the research-use disclaimer. The model's own notice travels only inside the AI
        output (`ai`, the reveal's `model`): a manual case's reader learns nothing about the model, not even that."""
        return {"disclaimer": DISCLAIMER, **payload}

    @api.get("/study", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "study.html")

    @api.get("/v1/study/me", responses=errors(400))
    async def me(reader: Reader):
        """The reader's study, the form's labels, progress and reading list (positions and conditions only)."""
        study = await _call(studies.study, reader.study_id)
        return body(reader, {
            "reader": reader.name, "labels": list(CHEXPERT14),
            "study": {"id": study.id, "name": study.name, "mode": study.mode, "conditions": list(study.conditions)},
            "progress": await _call(studies.progress, reader.id),
            "assignments": await _call(studies.assignments, reader.id)})

    @api.get("/v1/study/next", responses=errors(400))
    async def next_case(reader: Reader):
        """The case to read next (cases open in order); `done` once every case is submitted."""
        progress = await _call(studies.progress, reader.id)
        return body(reader, {"done": progress["next"] is None, "position": progress["next"], "progress": progress})

    @api.get("/v1/study/cases/{position}", responses=errors(400, 404))
    async def case(reader: Reader, position: Position):
        """The case under its condition: `ai` is null (manual; teaching before the reveal), the labels with
        probabilities (labels), or those with reasoning, findings, impression and boxes (reasoning)."""
        payload = await case_at(reader, position)
        images = [f"/v1/study/cases/{position}/images/{i}.png" for i in range(payload["n_images"])]
        return body(reader, {**payload, "mode": reader.mode, "images": images})

    @api.get("/v1/study/cases/{position}/images/{index}.png", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}, "description": "a de-identified 8-bit PNG of the case"},
                        **errors(400, 404)})
    async def case_image(reader: Reader, position: Position, index: ImageIndex):
        await case_at(reader, position)
        path = await _call(studies.case_image, reader.id, position, index)
        if path is None:
            raise StudyError(404, f"case {position} has no image {index}", code="not_found")
        return FileResponse(path, media_type="image/png",
                            headers={"X-Cxrlm-Disclaimer": DISCLAIMER, "Cache-Control": "no-store"})

    @api.post("/v1/study/cases/{position}/events", responses=errors(400, 404, 409))
    async def clock(reader: Reader, position: Position, event: ClockEvent):
        """view (the first one starts the clock), pause, resume: the case's status and active seconds so far."""
        await case_at(reader, position)
        step = {"view": studies.mark_viewed, "pause": studies.pause, "resume": studies.resume}[event.event]
        row = await _call(step, reader.id, position)
        return body(reader, {**row, "event": event.event, "paused": row["status"] == "paused"})

    @api.post("/v1/study/cases/{position}/read", responses=errors(400, 404, 409))
    async def submit(reader: Reader, position: Position, read: Read):
        """The read: findings, impression, confidence and (where AI was shown) the four ratings. Stops the clock."""
        payload = await case_at(reader, position)
        request_id = new_id()
        study = await _call(studies.study, reader.study_id)
        digest = hashlib.sha256(json.dumps(read.model_dump(), sort_keys=True).encode()).hexdigest()
        # The audit keeps who (the reader key's id, as for any API key), the condition and the time: never the
        # case, its images or the reader's text.
        await asyncio.to_thread(store.audit_start, request_id, api_key_id=reader.id, endpoint="/v1/study/read",
                                model=(study.model or {}).get("name") or "", template_version="",
                                input_sha256=digest)
        try:
            progress = await _call(studies.submit, reader.id, position, read.model_dump())
        except StudyError as err:
            await asyncio.to_thread(store.audit_end, request_id, "failed", detail=f"{err.status}")
            raise
        row = next(a for a in await _call(studies.assignments, reader.id) if a["position"] == position)
        await asyncio.to_thread(store.audit_end, request_id, "completed",
                                output={"condition": payload["condition"], "active_s": row["seconds"]})
        return body(reader, {"position": position, "active_s": row["seconds"], "progress": progress})

    @api.get("/v1/study/cases/{position}/reveal", responses=errors(400, 404, 409))
    async def reveal(reader: Reader, position: Position):
        """Teaching, after the read: the model's reasoning, labels and boxes, the reference labels, per-label
        agreement (resident, model, truth) and the running score over every case read so far."""
        await case_at(reader, position)
        return body(reader, await _call(studies.reveal, reader.id, position))

    @api.get("/v1/study/teaching-file", response_class=Response,
             responses={200: {"content": {"application/zip": {}}, "description": "one HTML page per case read"},
                        **errors(400, 409)})
    async def teaching_file(reader: Reader):
        """Teaching: every case read so far (image, read, model reasoning, truth, agreement) as HTML pages, zipped."""
        if reader.mode != "teaching":
            raise StudyError(409, "the teaching file is for teaching studies (cxrlm study create --mode teaching)",
                             "conflict")
        data = await asyncio.to_thread(_teaching_zip, await _call(studies.teaching_entries, reader.id))
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": 'attachment; filename="cxrlm-teaching-file.zip"', "X-Cxrlm-Disclaimer": DISCLAIMER})

    return api



def _teaching_zip(entries: list[dict]) -> bytes:
    from cxrlm.study.teaching import teaching_file

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="cxrlm-teaching-") as folder, \
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        teaching_file(entries, Path(folder))
        for page in sorted(Path(folder).iterdir()):
            archive.write(page, page.name)
    return buffer.getvalue()
