"""The web viewer in headless Chromium: upload a synthetic PNG, watch reasoning stream in, see labels, ask a
follow-up, take a screenshot. Skips cleanly without /usr/bin/chromium or playwright (no browser is downloaded).
"""

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from cxrlm import DISCLAIMER
from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
from cxrlm.serve.storage import Store


def test_viewer_uploads_streams_labels_and_chats(tiny_model, tmp_path):
    from tests.test_serve_api import png_bytes

    image = tmp_path / "synthetic.png"
    image.write_bytes(png_bytes(120, 100))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    settings = ServeSettings(max_new_tokens=12)
    with serve_in_thread(create_app(tiny_model, store, settings)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            page.wait_for_function(f"document.getElementById('disclaimer').textContent === {DISCLAIMER!r}")
            page.set_input_files("#file", str(image))
            page.wait_for_function("document.getElementById('reasoning').textContent.length > 0", timeout=60_000)
            page.wait_for_selector("#labels li.label", timeout=60_000)  # CheXpert-14 scores from classify
            page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=60_000)
            assert page.locator("#labels li.label").count() == 14
            assert page.evaluate("document.getElementById('canvas').width") == 100
            page.check("#heatmap")  # the overlay toggle asks classify for a heatmap and draws it
            page.wait_for_function("state.heatmap !== null", timeout=60_000)
            assert page.evaluate("state.heatmap.naturalWidth") == 100
            assert page.locator("#heatmap-of").text_content().startswith("(")
            page.fill("#question", "Is there a pleural effusion?")
            page.click("#chat-form button")
            page.wait_for_function("state.chat.length === 2", timeout=60_000)  # the streamed answer is complete
            assert page.locator("#chat .assistant").text_content()
            page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
            if shot := os.environ.get("CXRLM_SCREENSHOT"):  # keep one to look at
                page.screenshot(path=shot, full_page=True)
            assert (tmp_path / "viewer.png").stat().st_size > 1000
            assert page.locator("#banner").is_visible()
            assert not errors, errors
        finally:
            browser.close()
    done = {(e.endpoint, e.event) for e in store.audit_events()}
    assert {("/v1/cxr/report", "completed"), ("/v1/cxr/classify", "completed"),
            ("/v1/chat/completions", "completed")} <= done
    store.close()


def test_viewer_banner_shows_the_model_notice(tmp_path):
    """A demonstration model says so in the banner, next to the research-use disclaimer."""
    from tests.test_honest_outputs import NOTICE, demo_model

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    with serve_in_thread(create_app(demo_model("x"), store)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function(f"document.getElementById('disclaimer').textContent === {DISCLAIMER!r}")
            page.wait_for_function("!document.getElementById('model-notice').hidden")
            assert page.locator("#banner #model-notice").inner_text() == f"Model notice: {NOTICE}"
        finally:
            browser.close()
    store.close()
