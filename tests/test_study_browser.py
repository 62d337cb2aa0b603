"""Reader studies and teaching in the real browser (headless system Chromium), end to end.

A 6-case, 3-condition study is made by `cxrlm study create` (the real command, tiny random model, synthetic PNGs)
and read at /study. Three readers, not two: with two, each case is read under only two of the three conditions, so
"each case under every condition across readers" needs a reader per condition (design.py: a Latin square over
case blocks; 3 readers balance it exactly). One reader pauses and resumes; the paused span must not count. Then:
every response and time is stored, the design holds, no page of a manual case received AI content (every network
response is checked), and `cxrlm study results` writes the HTML and CSV. The teaching test reads first, then checks
the reveal and the score against a hand computation. Skips cleanly without /usr/bin/chromium or playwright.
"""

import csv
import io
import json
import os
import re
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from cxrlm import DISCLAIMER  # noqa: E402
from cxrlm.pathologies import CHEXPERT14  # noqa: E402
from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread  # noqa: E402
from cxrlm.serve.storage import Store  # noqa: E402

CONDITIONS = ("manual", "labels", "reasoning")
PAUSE_S = 1.5
# Words only AI content carries: a manual page's responses must contain none of them.
AI_MARKERS = ('"probability"', '"reasoning"', '"boxes"', '"report_labels"', '"image_size"', '"model_notice":"')
LAUNCH = {"executable_path": str(CHROMIUM), "args": ["--no-sandbox", "--disable-gpu",
                                                     "--disable-background-networking"]}


def make_cases(folder: Path, n: int) -> tuple[Path, dict[str, dict[str, int]]]:
    """n synthetic PNGs and a JSONL manifest with reference labels (seeded)."""
    import numpy as np

    from tests.test_serve_api import png_bytes

    rng = np.random.default_rng(35)
    truth = {}
    with (folder / "cases.jsonl").open("w") as manifest:
        for i in range(n):
            (folder / f"case{i}.png").write_bytes(png_bytes(96, 80, seed=i))
            truth[f"case{i}"] = {name: int(rng.integers(0, 2)) for name in CHEXPERT14}
            manifest.write(json.dumps({"case_id": f"case{i}", "images": [f"case{i}.png"],
                                       "labels": truth[f"case{i}"]}) + "\n")
    return folder / "cases.jsonl", truth


def cxrlm(capsys, *argv) -> str:
    from cxrlm.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def create_study(capsys, tmp_path, mode: str, readers: int, n_cases: int):
    """`cxrlm study create` with the shipped cxrlm-tiny (nothing downloaded): a trained model answers in its format
    and stops, so the reasoning condition has real text and boxes to show (a random checkpoint writes 2,048 tokens
    of noise per case)."""
    from cxrlm.models import DEFAULT_MODEL_DIR

    manifest, truth = make_cases(tmp_path, n_cases)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = cxrlm(capsys, "study", "create", "--cases", str(manifest), "--conditions", ",".join(CONDITIONS),
                "--readers", str(readers), "--mode", mode, "--seed", "7", "--model", str(DEFAULT_MODEL_DIR),
                "--device", "cpu", "--db", db, "--data-dir", str(tmp_path))
    summary = json.loads(out[:out.index("\nReader keys")])
    keys = [line.split("\t")[1] for line in out.splitlines() if line.startswith("R") and "\t" in line]
    assert len(keys) == readers
    return summary["study"], keys, truth, db


def browser_page(browser):
    """A fresh page (own sessionStorage) that records every /v1/study response body and any page error."""
    page = browser.new_context().new_page()
    page.seen, page.errors = [], []
    page.on("pageerror", lambda err: page.errors.append(str(err)))

    def record(response):
        if "/v1/study/" in response.url and "image" not in response.headers.get("content-type", ""):
            try:
                page.seen.append((response.url, response.text()))
            except Exception:  # noqa: BLE001 - a body already gone (navigation) has nothing to check
                pass

    page.on("response", record)
    return page


def sign_in(page, url: str, key: str) -> None:
    page.goto(url + "/study")
    page.wait_for_function(f"document.getElementById('disclaimer').textContent === {DISCLAIMER!r}")
    page.fill("#reader-key", key)
    page.click("#sign-in button")


def open_case(page, position: int, total: int) -> dict:
    page.wait_for_function(f"document.getElementById('case-title').textContent === 'Case {position} of {total}' "
                           "&& state.case && state.case.position === " + str(position))
    page.wait_for_function("document.getElementById('status').textContent === ''")
    return page.evaluate("state.case")


def fill_read(page, findings: list[str], ai_shown: bool, confidence: int = 4) -> None:
    for name in findings:
        page.check(f'input[name="finding"][value="{name}"]')
    page.fill("#impression", "synthetic read")
    page.check(f'input[name="confidence"][value="{confidence}"]')
    if ai_shown:
        for name, value in (("quality", 3), ("usefulness", 4), ("time_saved", 2), ("safety", 5)):
            page.check(f'input[name="{name}"][value="{value}"]')


def read_all(page, url: str, key: str, total: int, pause_at: int | None = None, hide_at: int | None = None) -> dict:
    """One reader reads every case in the browser; returns {position: condition} and checks each page's content."""
    sign_in(page, url, key)
    conditions = {}
    for position in range(1, total + 1):
        case = open_case(page, position, total)
        condition = conditions[position] = case["condition"]
        assert page.locator("#condition").text_content() == {"manual": "Read without AI", "labels": "AI labels shown",
                                                             "reasoning": "AI reasoning, report and boxes shown"}[condition]
        ai_visible = page.locator("#ai").is_visible()
        if condition == "manual":
            assert not ai_visible and page.locator("#ai-labels li").count() == 0
            assert page.locator("#questionnaire").is_hidden()
        elif condition == "labels":
            assert ai_visible and page.locator("#ai-labels li").count() == 14
            assert page.locator("#ai-reasoning-box").is_hidden()
        else:
            assert ai_visible and page.locator("#ai-reasoning-box").is_visible()
            assert page.locator("#ai-labels li").count() == 14
            assert page.evaluate("state.boxes.length") == len(case["ai"]["boxes"])  # drawn on the image
        if condition != "reasoning":
            assert page.locator("#box-toggles label").count() == 0
        if condition != "manual":  # the model's own notice comes with its output (cxrlm-tiny: a demonstration)
            assert page.locator("#ai-notice").text_content().startswith("Model notice: demonstration model")
        if position == pause_at:
            page.click("#pause")
            page.wait_for_selector("#paused-cover", state="visible")
            assert page.locator("#read-form").evaluate("f => getComputedStyle(f).visibility") == "hidden"
            time.sleep(PAUSE_S)
            page.click("#resume")
            page.wait_for_selector("#paused-cover", state="hidden")
        if position == hide_at:  # the page goes hidden (another tab): the clock stops until the reader resumes
            page.evaluate("Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
                          "document.dispatchEvent(new Event('visibilitychange'))")
            page.wait_for_selector("#paused-cover", state="visible")
            page.evaluate("Object.defineProperty(document, 'hidden', {value: false, configurable: true})")
            assert page.evaluate("fetch('/v1/study/me', {headers: {Authorization: 'Bearer ' + state.key}})"
                                 f".then(r => r.json()).then(me => me.assignments[{position - 1}].status)") == "paused"
            page.click("#resume")
            page.wait_for_selector("#paused-cover", state="hidden")
        fill_read(page, CHEXPERT14[position % 3:position % 3 + 2], condition != "manual")
        page.click("#submit")
    page.wait_for_selector("#finished", state="visible")
    if shot := os.environ.get("CXRLM_SCREENSHOT"):  # keep one to look at
        page.screenshot(path=shot, full_page=True)
    assert page.locator("#progress").text_content() == f"{total} of {total} cases read"
    assert not page.errors, page.errors
    return conditions


def test_reader_study_in_the_browser(tiny_model, tmp_path, capsys):
    study_id, keys, truth, db = create_study(capsys, tmp_path, "reader", 3, 6)
    from cxrlm.study.store import StudyStore

    store = Store(db, tmp_path)
    seen = {}
    with serve_in_thread(create_app(tiny_model, store, ServeSettings())) as url, \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(**LAUNCH)
        try:
            for reader, key in enumerate(keys):
                page = browser_page(browser)
                conditions = read_all(page, url, key, 6, pause_at=3 if reader == 1 else None,
                                      hide_at=2 if reader == 2 else None)
                seen[reader] = (conditions, page.seen)
                # Manual cases: no response the page got while on them (payload, events, submit) carries AI content.
                manual = [p for p, c in conditions.items() if c == "manual"]
                payloads = 0
                for address, text in page.seen:
                    assert '"disclaimer"' in text, address
                    found = re.search(r"/v1/study/cases/(\d+)", address)
                    if found and int(found.group(1)) in manual:
                        assert not any(marker in text for marker in AI_MARKERS), (address, text[:300])
                        if address.endswith(found.group(0)):  # the case payload itself
                            assert json.loads(text)["ai"] is None
                            payloads += 1
                assert payloads == len(manual) == 2
            # Without a key, or with a wrong one: a one-line 401, no content.
            page = browser_page(browser)
            page.goto(url + "/study")
            assert page.evaluate("fetch('/v1/study/me').then(r => r.status)") == 401
            sign_in(page, url, keys[0][:-2] + "xx")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('sign-in refused')")
        finally:
            browser.close()

    studies = StudyStore(db, tmp_path)
    rows = studies.responses(study_id)
    assert len(rows) == 18  # 3 readers x 6 cases, every one stored
    for row in rows:
        assert row["active_seconds"] > 0 and row["confidence"] == 4 and row["impression"] == "synthetic read"
        assigned_ai = row["condition"] != "manual"
        assert all((row[q] is not None) == assigned_ai for q in ("quality", "usefulness", "time_saved", "safety"))
        assert sum(row["findings"].values()) == 2
    # Counterbalancing: each reader reads each condition on 2 cases; each case is read under every condition.
    for reader in {r["reader"] for r in rows}:
        assert Counter(r["condition"] for r in rows if r["reader"] == reader) == {c: 2 for c in CONDITIONS}
    for case in truth:
        assert sorted(r["condition"] for r in rows if r["case"] == case) == sorted(CONDITIONS)
        # What two readers alone give: every case under two different conditions (never the same one twice).
        assert len({r["condition"] for r in rows if r["case"] == case and r["reader"] in ("R01", "R02")}) == 2
    # The conditions each page showed are the stored design's.
    for reader, (conditions, _) in seen.items():
        name = f"R{reader + 1:02d}"
        assert conditions == {r["position"]: r["condition"] for r in rows if r["reader"] == name}
    # The pause: the stored time leaves the paused span out (server clock: view, pause, resume, submit).
    paused = next(r for r in rows if r["reader"] == "R02" and r["position"] == 3)
    span = _seconds(paused["submitted_at"]) - _seconds(paused["first_view_at"])
    assert span >= PAUSE_S and paused["active_seconds"] <= span - PAUSE_S + 0.05
    # Audit: one completed submit per read, holding no case id and no text.
    submits = [e for e in store.audit_events() if e.endpoint == "/v1/study/read" and e.event == "completed"]
    assert len(submits) == 18
    assert all(set(e.output) == {"condition", "active_s"} for e in submits)

    out = tmp_path / "results"
    cxrlm(capsys, "study", "results", study_id[:8], "--out", str(out), "--db", db, "--data-dir", str(tmp_path),
          "--resamples", "200")
    html = (out / "report.html").read_text()
    assert DISCLAIMER in html and all(f"<th>{c}</th>" in html for c in CONDITIONS)
    figures = json.loads((out / "results.json").read_text())["conditions"]
    for condition in CONDITIONS:  # the hand computation: mean time and micro sensitivity of the stored reads
        mine = [r for r in rows if r["condition"] == condition]
        assert figures[condition]["seconds_per_case"] == pytest.approx(
            sum(r["active_seconds"] for r in mine) / len(mine), abs=1e-3)
        tp = sum(r["findings"][n] and truth[r["case"]][n] == 1 for r in mine for n in CHEXPERT14)
        positives = sum(truth[r["case"]][n] == 1 for r in mine for n in CHEXPERT14)
        assert figures[condition]["micro_sensitivity"] == pytest.approx(tp / positives)
    with (out / "responses.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 18
    assert sorted(float(r["active_seconds"]) for r in table) == sorted(r["active_seconds"] for r in rows)
    studies.close()
    store.close()


def test_teaching_mode_read_reveal_score(tiny_model, tmp_path, capsys):
    study_id, keys, truth, db = create_study(capsys, tmp_path, "teaching", 1, 3)
    from cxrlm.study.store import StudyStore

    studies = StudyStore(db, tmp_path)
    reader = studies.readers(study_id)[0]
    store = Store(db, tmp_path)
    picks = {1: ["Cardiomegaly", "Edema"], 2: [], 3: ["Pleural Effusion"]}
    with serve_in_thread(create_app(tiny_model, store, ServeSettings())) as url, \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(**LAUNCH)
        try:
            page = browser_page(browser)
            sign_in(page, url, keys[0])
            resident = model = scored = 0
            for position in (1, 2, 3):
                case = open_case(page, position, 3)
                # Read first: nothing of the model on the page or in its payload before the submit.
                assert case["ai"] is None and page.locator("#ai").is_hidden()
                assert page.locator("#questionnaire").is_hidden()
                fill_read(page, picks[position], ai_shown=False)
                page.click("#submit")
                page.wait_for_selector("#reveal", state="visible")
                assert page.locator("#ai").is_visible() and page.locator("#ai-labels li").count() == 14
                # The hand computation: the case's reference (from the manifest) and the model's stored calls.
                case_id = studies.assignment_table(study_id)[position - 1]["case"]
                reference = truth[case_id]
                probabilities = _stored_output(studies, study_id, case_id)["probabilities"]
                calls = {n: (probabilities[n] or 0.0) >= 0.5 for n in CHEXPERT14}
                resident += sum((n in picks[position]) == bool(reference[n]) for n in CHEXPERT14)
                model += sum(calls[n] == bool(reference[n]) for n in CHEXPERT14)
                scored += 14
                rows = page.locator("#agreement tbody tr")
                assert rows.count() == 14
                for i, name in enumerate(CHEXPERT14):
                    cells = rows.nth(i).locator("td").all_text_contents()
                    mark = lambda v: "present" if v else "absent"  # noqa: E731
                    assert cells == [name, mark(name in picks[position]), mark(calls[name]), mark(reference[name])]
                expected = (f"you {resident}/{scored} ({100 * resident / scored:.1f}%), "
                            f"model {model}/{scored} ({100 * model / scored:.1f}%)")
                assert page.locator("#running-score").text_content() == expected
                page.click("#next")
            page.wait_for_selector("#finished", state="visible")
            with page.expect_download() as download:
                page.click("#export")
            archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
            assert sorted(archive.namelist()) == ["case-0001.html", "case-0002.html", "case-0003.html", "index.html"]
            assert DISCLAIMER in archive.read("case-0001.html").decode()
            assert not page.errors, page.errors
        finally:
            browser.close()
    assert len(studies.teaching_entries(reader.id)) == 3
    studies.close()
    store.close()


def _stored_output(studies, study_id: str, case_id: str) -> dict:
    from sqlalchemy import select

    from cxrlm.study.store import StudyCase

    with studies._session() as db:
        return db.scalars(select(StudyCase.model_output).where(StudyCase.study_id == study_id,
                                                                StudyCase.case_id == case_id)).one()


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()

