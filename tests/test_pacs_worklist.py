"""The viewer's PACS worklist (cxrlm/serve/pacs_routes.py) against a real Orthanc: it lists studies without
identifiers, and one call reads a study with its prior and streams the report, as /v1/cxr/report does."""

import json
import os

import httpx
import pytest

pytest.importorskip("fastapi")

from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
from cxrlm.serve.storage import Store
from tests.orthanc import MARKER


@pytest.fixture
def served(tiny_model, orthanc, tmp_path):
    """A server without a PACS and one with the Orthanc's worklist."""
    from cxrlm.pacs import PacsClient
    from cxrlm.serve.pacs_routes import add_pacs_routes

    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path / "serve")
    settings = ServeSettings(max_new_tokens=4, gate="on")
    plain = create_app(tiny_model, store, settings)
    with_pacs = create_app(tiny_model, store, settings)
    add_pacs_routes(with_pacs, PacsClient.from_env(environ=orthanc.env()))
    with serve_in_thread(plain) as plain_url, serve_in_thread(with_pacs) as pacs_url:
        yield plain_url, pacs_url, tmp_path
    store.close()


def sse(response: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_the_worklist_lists_studies_and_reads_one_with_its_prior(served, pacs_studies):
    plain, url, folder = served
    assert httpx.get(f"{plain}/v1/pacs/worklist").status_code == 404  # no PACS: the viewer hides the pane
    listing = httpx.get(f"{url}/v1/pacs/worklist", params={"days": 3660}, timeout=60)
    assert listing.status_code == 200, listing.text
    studies = listing.json()["studies"]
    assert len(studies) == len(pacs_studies) and "Research" in listing.json()["notice"]
    assert {s["date"] for s in studies} == {d["date"].isoformat() for d in pacs_studies}
    text = listing.text
    assert MARKER not in text and not any(s["study_uid"] in text for s in pacs_studies)

    newest = studies[0]  # newest first: a later study, so it has a prior
    assert newest["date"] == max(d["date"] for d in pacs_studies).isoformat()
    response = httpx.post(f"{url}/v1/pacs/studies/{newest['handle']}/report", json={"stream": True}, timeout=300)
    assert response.status_code == 200, response.text
    events = sse(response)
    first, last = events[0], events[-1]
    assert first["type"] == "study" and len(first["study_ids"]) == 2
    assert first["prior"]["date"] == min(d["date"] for d in pacs_studies).isoformat()
    assert len(first["prior"]["study_ids"]) == 2
    assert last["type"] == "result" and last["output"]["task"] == "report"
    image = httpx.get(f"{url}{first['study']['image']}")  # the viewer shows the stored, de-identified pixels
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    result = httpx.get(f"{url}/v1/results/{last['result_id']}").json()
    assert result["study_id"] == first["study_ids"][0]
    assert MARKER not in response.text and not any(s["study_uid"] in response.text for s in pacs_studies)
    stored = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and "orthanc" not in p.parts
                      and "pacs-source" not in p.parts)
    assert MARKER.encode() not in stored

    unknown = httpx.post(f"{url}/v1/pacs/studies/s0000000000/report", json={}, timeout=60)
    assert unknown.status_code == 404 and "worklist" in unknown.json()["error"]["message"]


def test_the_viewer_shows_the_worklist_only_with_a_pacs_and_reads_a_study(served, pacs_studies):
    from pathlib import Path

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    plain, url, _ = served
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(plain)
            page.wait_for_function("document.getElementById('model-name').textContent.length > 0")
            page.wait_for_timeout(500)  # the worklist's 404 has come back by now
            assert page.locator("#worklist").is_hidden()

            page.goto(url)
            page.wait_for_function("!document.getElementById('worklist').hidden", timeout=60_000)
            page.fill("#worklist-days", "3660")  # the synthetic studies are from 2021 and 2023
            page.click("#worklist-refresh")
            page.wait_for_selector("#worklist-rows tr", timeout=60_000)
            assert page.locator("#worklist-rows tr").count() == len(pacs_studies)
            page.locator("#worklist-rows tr button").first.click()  # newest first: a study with a prior
            page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=120_000)
            assert page.locator("#worklist-prior").text_content().startswith("Compared with the prior study of")
            assert page.locator("#reasoning").text_content()
            assert page.locator("#labels li.label").count() == 14
            assert page.evaluate("state.study.width") == page.evaluate("document.getElementById('canvas').width")
            if shot := os.environ.get("CXRLM_SCREENSHOT"):  # keep one to look at
                page.screenshot(path=shot, full_page=True)
            assert MARKER not in page.content()
            assert not any(s["study_uid"] in page.content() for s in pacs_studies)
            assert not errors, errors
        finally:
            browser.close()
