"""The viewer's worklist when the server has a PACS (`cxrlm serve --pacs URL`; credentials from the environment).

GET /v1/pacs/worklist lists the recent chest radiograph studies (CR/DX) by their handle (cxrlm.pacs.study_handle),
date, modalities and image count; nothing of the patient, and no UID: the browser never sees an identifier. POST
/v1/pacs/studies/{handle}/report reads that study and its prior from the PACS (in memory, through the input
gate), keeps their de-identified pixels as uploaded studies (so the viewer can show them) and answers exactly as
POST /v1/cxr/report does, the same job, audit row and stream, opened by one {"type": "study"} event that names
the study ids it stored. Without --pacs these routes do not exist (404), and the viewer hides its pane.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cxrlm import DISCLAIMER
from cxrlm.errors import InputError
from cxrlm.serve.app import MODEL_ERRORS, ApiError, sse_line, sse_response, task_stream
from cxrlm.serve.openai_format import errors
from cxrlm.types import Task

MAX_WORKLIST = 200  # studies one worklist shows (the PACS client refuses a search past its own bound)


class PacsReportRequest(BaseModel):
    stream: bool = Field(True, description="server-sent events: the study, text pieces, then the result")
    prior: bool = Field(True, description="also read the patient's most recent earlier chest study and its report")
    max_new_tokens: int | None = Field(None, ge=1)


def add_pacs_routes(app, client) -> None:
    """Add the worklist routes to an app made by cxrlm.serve.app.create_app; `client` is a cxrlm.pacs.PacsClient."""
    ctx, caller = app.state.ctx, app.state.caller
    listed: dict = {}  # handle -> StudyInfo of the last worklist (UIDs stay in the server's memory)

    @app.get("/v1/pacs/worklist", responses=errors(400))
    async def worklist(key: str = Depends(caller), days: Annotated[int, Query(ge=1, le=3660)] = 7):
        """Recent chest radiograph studies, newest first: handle, date, modalities, images; no patient data."""
        since = (date.today() - timedelta(days=days - 1)).strftime("%Y%m%d")
        infos = await asyncio.to_thread(_pacs, client.search_studies, date_from=since, limit=MAX_WORKLIST)
        listed.clear()
        listed.update((info.handle, info) for info in infos)
        return {"pacs": client.shown_url, "days": days, "notice": DISCLAIMER,
                "studies": [_row(info) for info in infos]}

    @app.post("/v1/pacs/studies/{handle}/report", responses=MODEL_ERRORS | errors(400, 404))
    async def read(handle: str, body: PacsReportRequest, request: Request, key: str = Depends(caller)):
        """Read a listed study (and its prior) from the PACS and report on it, as POST /v1/cxr/report does."""
        info = listed.get(handle)
        if info is None:
            raise ApiError(404, f"no study {handle[:20]} in the worklist: list it first (GET /v1/pacs/worklist)",
                           code="not_found")
        with ctx.queue_place():
            study, header = await asyncio.to_thread(_read, ctx, client, info, key, body.prior)
            run = ctx.task_job(Task.REPORT, study, header["study_ids"], key, ctx.token_cap(body.max_new_tokens))
        if body.stream:
            return sse_response(_with_header(header, task_stream(run)))
        result_id, out, _ = await ctx.wait(request, run)
        return JSONResponse({**out.to_dict(), "pacs": header}, headers={"X-Cxrlm-Result-Id": result_id})


def _row(info) -> dict:
    return {"handle": info.handle, "date": _iso(info.date), "modalities": list(info.modalities),
            "images": info.instances, "has_sr": "SR" in info.modalities}


def _iso(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _pacs(call, *args, **kwargs):
    """A PACS call; its one-line error (cxrlm.pacs.PacsError) becomes a 502: the PACS, not the request, failed."""
    from cxrlm.pacs import PacsError

    try:
        return call(*args, **kwargs)
    except PacsError as err:
        raise ApiError(502, str(err), "pacs_error") from None


def _read(ctx, client, info, key: str, with_prior: bool):
    """The study and its prior from the PACS, gated, their pixels stored for the viewer; and what the stream's
    first event says of them."""
    from cxrlm.gate import GateRefusal, check_study
    from cxrlm.pacs import read_prior, read_study

    try:
        current = _pacs(read_study, client, info, max_pixels=ctx.settings.max_pixels)
        prior = _pacs(read_prior, client, current, max_pixels=ctx.settings.max_pixels) if with_prior else None
        check_study(current.study, ctx.settings.gate)
    except (GateRefusal, InputError) as err:
        raise ApiError(400, str(err)) from None
    study = ctx.gate_views(current.study)
    study_ids = [ctx.store.save_study(image, key) for image in study.images]
    header = {"type": "study", "handle": info.handle, "study_ids": study_ids,
              "study": ctx.study_info(study_ids[0]), "prior": None}
    if prior is not None:
        header["prior"] = {"handle": prior.handle, "date": _iso(prior.info.date),
                           "study_ids": [ctx.store.save_study(image, key) for image in prior.study.images],
                           "report": current.prior_report_found}
    return study, header


async def _with_header(header: dict, stream):
    yield sse_line(header)
    async for line in stream:
        yield line
