"""The reader-study and teaching routes under /v1/study, and the /study page that uses them.

A reader signs in with their own reader key (`Authorization: Bearer`, always, also on loopback: the key says who
reads), and gets only their own assignments, by their 1-based place in their reading order. A case's payload holds
what its condition shows and nothing more: `manual` no AI at all, `labels` the labels with probabilities,
`reasoning` the reasoning, report and boxes as well; in teaching mode nothing until the read is submitted, then the
reveal (the model's output beside the reference labels, per-label agreement and the running score). The clock is
the server's: a case's time is the active time from its first view to the submit, paused spans left out. Every
JSON body carries the research-use disclaimer; a submit writes an audit pair with no case or reader identifier.
The study itself (design, store, agreement) is cxrlm.study; this module is only its HTTP face.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Path as PathParam, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cxrlm import DISCLAIMER
from cxrlm.pathologies import CHEXPERT14
from cxrlm.serve import openai_format as oa
from cxrlm.serve.security import RateLimiter, bearer_token, retry_after_header
from cxrlm.serve.storage import Store, new_id

WEB_DIR = Path(__file__).parent / "web"
MAX_KEY_CHARS = 200  # a reader key is ~60 characters; anything longer is refused before it is looked up
MAX_POSITION = 10_000  # more cases than one reader reads
MAX_IMPRESSION_CHARS = 2_000
Likert = Annotated[int, Field(ge=1, le=5)]


class StudyError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


class ClockEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["view", "pause", "resume"]


class Read(BaseModel):
    """One reader's read of one case. The four questionnaire items rate the AI output, so only AI conditions ask them."""

    model_config = ConfigDict(extra="forbid")
    findings: list[str] = Field(default_factory=list, max_length=len(CHEXPERT14),
                                description="the CheXpert-14 labels the reader marks present")
    impression: str = Field("", max_length=MAX_IMPRESSION_CHARS)
    confidence: Likert
    quality: Likert | None = None
    usefulness: Likert | None = None
    time_saved: Likert | None = None
    safety: Likert | None = None

    @field_validator("findings")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in CHEXPERT14]
        if unknown:
            raise ValueError(f"not CheXpert-14 labels: {', '.join(unknown)[:200]}")
        if len(set(names)) != len(names):
            raise ValueError("a label is marked twice")
        return names

    def questionnaire(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in QUESTIONS}


QUESTIONS = ("quality", "usefulness", "time_saved", "safety")


def install(app: FastAPI, store: Store, settings) -> None:
    """Mount the study routes and the /study page on `app`, with their one-line JSON errors."""
    app.include_router(router(store, settings))

    @app.exception_handler(StudyError)
    async def study_error(_request, err: StudyError):
        return JSONResponse(oa.error_body(err.message, err.kind), status_code=err.status, headers=err.headers)


def router(store: Store, settings) -> APIRouter:
    from cxrlm.study.store import StudyStore

    studies = StudyStore(store)
    limiter = RateLimiter(settings.rate_per_minute)
    api = APIRouter()

    async def reader(request: Request):
        """The signed-in reader, from their reader key (401 without a live one)."""
        token = bearer_token(request.headers.get("authorization"))
        if not token or len(token) > MAX_KEY_CHARS:
            raise StudyError(401, "sign in with your reader key: send 'Authorization: Bearer <reader key>' (the "
                             "study's coordinator creates them with `cxrlm study create`)", "authentication_error")
        found = await asyncio.to_thread(studies.reader_for_key, token)
        if found is None:
            raise StudyError(401, "unknown or revoked reader key: ask the study's coordinator for yours",
                             "authentication_error")
        if wait := limiter.acquire(f"reader:{found.id}"):
            raise StudyError(429, f"rate limit of {settings.rate_per_minute} requests/minute reached: retry later",
                             "rate_limit_error", {"Retry-After": retry_after_header(wait)})
        return found

    Reader = Annotated[object, Depends(reader)]
    Position = Annotated[int, PathParam(ge=1, le=MAX_POSITION, description="1-based place in the reading order")]

    def assignment(who, position: int):
        found = studies.assignment(who, position)
        if found is None:
            raise StudyError(404, f"no case {position} in your reading list: GET /v1/study/me lists yours")
        return found

    @api.get("/study", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "study.html")

    @api.get("/v1/study/me")
    async def me(who: Reader):
        """The reader's study, conditions, the labels of the form, progress and reading list (no case content)."""
        study = await asyncio.to_thread(studies.study_of, who)
        items = await asyncio.to_thread(studies.assignments, who)
        return _body({"reader": who.label, "labels": list(CHEXPERT14), "progress": _progress(items),
                      "study": {"id": study.id, "name": study.name, "mode": study.mode,
                                "conditions": list(study.conditions)},
                      "assignments": [{"position": a.position, "condition": a.condition, "done": a.done}
                                      for a in items]}, study)

    @api.get("/v1/study/next")
    async def next_case(who: Reader):
        """The first case not yet read, in the reader's order; `done` when every case is read."""
        items = await asyncio.to_thread(studies.assignments, who)
        left = [a for a in items if not a.done]
        return _body({"done": not left, "position": left[0].position if left else None,
                      "progress": _progress(items)})

    @api.get("/v1/study/cases/{position}")
    async def case(who: Reader, position: Position):
        """What this case's condition shows: the image, and no AI (manual, teaching before the read), the labels
        (labels) or the reasoning, report and boxes too (reasoning)."""
        study = await asyncio.to_thread(studies.study_of, who)
        item = await asyncio.to_thread(assignment, who, position)
        shown = None
        if item.condition in ("labels", "reasoning"):
            shown = condition_view(item.condition, await asyncio.to_thread(studies.model_output, item))
        width, height = await asyncio.to_thread(studies.image_size, item)
        return _body({"position": position, "condition": item.condition, "mode": study.mode, "done": item.done,
                      "image": f"/v1/study/cases/{position}/image.png", "width": width, "height": height,
                      "ai": shown}, study)

    @api.get("/v1/study/cases/{position}/image.png", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}, "description": "the case's de-identified 8-bit PNG"}})
    async def case_image(who: Reader, position: Position):
        item = await asyncio.to_thread(assignment, who, position)
        return FileResponse(await asyncio.to_thread(studies.image_path, item), media_type="image/png",
                            headers={"X-Cxrlm-Disclaimer": DISCLAIMER, "Cache-Control": "no-store"})

    @api.post("/v1/study/cases/{position}/events")
    async def clock(who: Reader, position: Position, body: ClockEvent):
        """view (first view starts the clock), pause and resume; answers the active seconds so far."""
        item = await asyncio.to_thread(assignment, who, position)
        if item.done:
            raise StudyError(409, f"case {position} is already submitted: GET /v1/study/next for the next one")
        events = await asyncio.to_thread(studies.add_event, item, body.event)
        paused = _is_paused(events)
        return _body({"event": body.event, "paused": paused, "active_s": round(active_seconds(events), 3)})

    @api.post("/v1/study/cases/{position}/read")
    async def submit(who: Reader, position: Position, body: Read):
        """The read: findings, impression, confidence and (AI conditions) the questionnaire; stops the clock."""
        study = await asyncio.to_thread(studies.study_of, who)
        item = await asyncio.to_thread(assignment, who, position)
        _check_read(item, body, position)
        request_id = new_id()
        digest = hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()
        await asyncio.to_thread(store.audit_start, request_id, api_key_id=who.key_id, endpoint="/v1/study/read",
                                model=study.model, template_version="", input_sha256=digest)
        try:
            saved = await asyncio.to_thread(studies.save_read, item, body.findings, body.impression,
                                            body.confidence, body.questionnaire())
        except Exception as err:
            await asyncio.to_thread(store.audit_end, request_id, "failed", detail=type(err).__name__)
            raise
        # What the audit keeps: the condition and the time, never the case, the reader or the text.
        await asyncio.to_thread(store.audit_end, request_id, "completed",
                                output={"condition": item.condition, "active_s": saved.active_s})
        items = await asyncio.to_thread(studies.assignments, who)
        return _body({"position": position, "active_s": saved.active_s, "progress": _progress(items)}, study)

    @api.get("/v1/study/cases/{position}/reveal")
    async def reveal(who: Reader, position: Position):
        """Teaching mode, after the read: the model's reasoning, labels and boxes, the reference labels, per-label
        agreement (resident, model, truth) and the score of this case and of every case read so far."""
        study = await asyncio.to_thread(studies.study_of, who)
        item = await asyncio.to_thread(assignment, who, position)
        if study.mode != "teaching":
            raise StudyError(403, "the reveal is for teaching studies: a reader study never shows the model's "
                             "output outside the assigned condition", "permission_error")
        if not item.done:
            raise StudyError(409, f"read case {position} first: submit it with POST /v1/study/cases/{position}/read")
        shown = await asyncio.to_thread(studies.teaching_reveal, who, item)
        return _body({"position": position, "ai": condition_view("reasoning", shown["output"]),
                      "agreement": shown["agreement"], "score": shown["score"]}, study)

    @api.get("/v1/study/teaching-file")
    async def teaching_file(who: Reader):
        """Teaching mode: every case read so far, with the read, the model's output, the reference and agreement."""
        study = await asyncio.to_thread(studies.study_of, who)
        if study.mode != "teaching":
            raise StudyError(403, "the teaching file is for teaching studies", "permission_error")
        document = await asyncio.to_thread(studies.teaching_file, who)
        return JSONResponse(_body(document, study), headers={
            "Content-Disposition": 'attachment; filename="cxrlm-teaching-file.json"'})

    return api


def condition_view(condition: str, output: dict) -> dict:
    """What a condition shows of a stored ModelOutput dict: labels with probabilities (labels), plus reasoning,
    findings, impression and boxes (reasoning). Built field by field, so nothing else can leak into a page."""
    probabilities = output.get("probabilities") or {}
    present = {label["name"] for label in output.get("labels", []) if label.get("present", True)}
    labels = [{"name": name, "probability": probabilities.get(name), "present": name in present}
              for name in CHEXPERT14]
    if condition == "labels":
        return {"labels": labels}
    boxes = [{"label": box["label"], "xyxy": box["xyxy"], "score": box.get("score")}
             for box in output.get("boxes", [])]
    return {"labels": labels, "reasoning": output.get("reasoning") or "", "findings": output.get("findings") or "",
            "impression": output.get("impression") or "", "boxes": boxes}


def active_seconds(events: list[tuple[str, float]], end: float | None = None) -> float:
    """Seconds from the first view to `end` (the submit; else the last event), paused spans left out.
    `events`: (kind, unix time) in time order; kinds view, pause, resume."""
    active, running_since, started = 0.0, None, False
    for kind, at in events:
        if kind == "view" and not started:  # a later view (a reload) changes nothing
            started, running_since = True, at
        elif kind == "pause" and running_since is not None:
            active, running_since = active + at - running_since, None
        elif kind == "resume" and started and running_since is None:
            running_since = at
    if running_since is not None:
        last = end if end is not None else (events[-1][1] if events else running_since)
        active += max(0.0, last - running_since)
    return active


def _is_paused(events: list[tuple[str, float]]) -> bool:
    kinds = [kind for kind, _ in events if kind in ("pause", "resume")]
    return bool(kinds) and kinds[-1] == "pause"


def _check_read(item, body: Read, position: int) -> None:
    if item.done:
        raise StudyError(409, f"case {position} is already submitted: a read cannot be changed")
    asked = item.condition in ("labels", "reasoning")
    given = [name for name, value in body.questionnaire().items() if value is not None]
    if asked and len(given) < len(QUESTIONS):
        missing = [name for name in QUESTIONS if name not in given]
        raise StudyError(400, f"rate the AI output: {', '.join(missing)} (1-5) are required under the "
                         f"{item.condition} condition")
    if not asked and given:
        raise StudyError(400, f"{', '.join(given)}: no AI output is shown under the {item.condition} condition, "
                         "so leave the questionnaire out")


def _progress(items) -> dict:
    return {"done": sum(a.done for a in items), "total": len(items)}


def _body(body: dict, study=None) -> dict:
    """Every answer carries the research-use disclaimer (and, where the study is known, its model's notice)."""
    out = {"disclaimer": DISCLAIMER, **body}
    if study is not None:
        out["model_notice"] = study.model_notice
    return out
