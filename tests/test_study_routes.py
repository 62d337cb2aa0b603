"""The /v1/study routes over HTTP, without a browser: sign-in, what each condition's payload holds, the clock,
bounds and one-line errors, the audit of submits, and teaching's reveal and teaching file. The study is stored
directly (tests/test_study_results.py's synthetic one, with a fake clock, so times are exact)."""

import io
import zipfile

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from cxrlm import DISCLAIMER  # noqa: E402
from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread  # noqa: E402
from cxrlm.serve.storage import Store  # noqa: E402
from tests.test_study_results import make_study  # noqa: E402

RATINGS = {"quality": 3, "usefulness": 4, "time_saved": 2, "safety": 5}


@pytest.fixture
def served(tiny_model, tmp_path):
    """(http client factory, study store, fake clock, reader keys, server store) for a 3-case reader study."""
    studies, clock, _study_id, keys = make_study(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path)
    with serve_in_thread(with_clock(create_app(tiny_model, store, ServeSettings()), clock)) as url:
        def client(key=None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.Client(base_url=url, headers=headers, timeout=30)
        yield client, studies, clock, keys, store
    studies.close()
    store.close()


def with_clock(app, clock):
    app.state.studies.clock = clock  # the server's study store reads the test's fake clock
    return app


def error(response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert message and "\n" not in message
    return message


def positions_by_condition(http) -> dict[str, int]:
    me = http.get("/v1/study/me").json()
    return {a["condition"]: a["position"] for a in me["assignments"]}


def test_sign_in_and_what_each_condition_shows(served):
    client, studies, clock, keys, store = served
    assert "reader key" in error(client().get("/v1/study/me"), 401)
    assert "unknown reader key" in error(client(keys["R01"][:-3] + "abc").get("/v1/study/me"), 401)
    error(client("cxrs-" + "a" * 300).get("/v1/study/next"), 401)  # over the length bound: not looked up
    http = client(keys["R01"])
    me = http.get("/v1/study/me").json()
    assert me["disclaimer"] == DISCLAIMER and me["reader"] == "R01" and len(me["labels"]) == 14
    assert me["progress"] == {"done": 0, "total": 3, "next": 1}
    assert all(set(a) == {"position", "condition", "status", "seconds"} for a in me["assignments"])  # no case id
    page = client().get("/study")  # the page itself needs no key; everything it shows does
    assert page.status_code == 200 and "/static/study.js" in page.text and 'id="disclaimer"' in page.text
    where = positions_by_condition(http)
    for position in (1, 2, 3):  # cases open in order: the later ones are refused until this one is read
        if position < 3:
            assert "first" in error(http.get(f"/v1/study/cases/{position + 1}"), 409)
        case = http.get(f"/v1/study/cases/{position}").json()
        assert case["disclaimer"] == DISCLAIMER and case["images"] == [f"/v1/study/cases/{position}/images/0.png"]
        shown = case["ai"]
        if position == where["manual"]:
            assert shown is None
            ratings = {}
        elif position == where["labels"]:
            assert set(shown) == {"model", "model_notice", "labels"} and len(shown["labels"]) == 14
            ratings = RATINGS
        else:
            assert shown["reasoning"] == "heart is big" and shown["boxes"][0]["label"] == "heart"
            ratings = RATINGS
        image = http.get(case["images"][0])
        assert image.headers["content-type"] == "image/png" and image.headers["x-cxrlm-disclaimer"] == DISCLAIMER
        assert http.post(f"/v1/study/cases/{position}/events", json={"event": "view"}).json()["status"] == "reading"
        clock.tick(20)
        http.post(f"/v1/study/cases/{position}/events", json={"event": "pause"})
        clock.tick(500)  # paused: not counted
        assert http.post(f"/v1/study/cases/{position}/events", json={"event": "resume"}).json()["paused"] is False
        clock.tick(10)
        saved = http.post(f"/v1/study/cases/{position}/read",
                          json={"findings": ["Cardiomegaly"], "impression": "big heart", "confidence": 4, **ratings})
        assert saved.status_code == 200, saved.text
        assert saved.json()["active_s"] == 30.0 and saved.json()["progress"]["done"] == position
        assert "already submitted" in error(http.post(f"/v1/study/cases/{position}/read", json={
            "findings": [], "confidence": 4, **ratings}), 409)
    assert http.get("/v1/study/next").json() == {"disclaimer": DISCLAIMER, "done": True,
                                                 "position": None, "progress": {"done": 3, "total": 3, "next": None}}
    submits = [e for e in store.audit_events() if e.endpoint == "/v1/study/read" and e.event == "completed"]
    assert [e.output for e in submits] == [{"condition": c, "active_s": 30.0} for c in
                                           sorted(where, key=where.get)]  # no case id, no text


def test_bounds_and_refusals(served):
    client, studies, clock, keys, store = served
    http = client(keys["R02"])
    assert "1 to 3" in error(http.get("/v1/study/cases/4"), 404)
    error(http.get("/v1/study/cases/0"), 400)
    error(http.get("/v1/study/cases/1/images/99.png"), 400)
    assert "no image 1" in error(http.get("/v1/study/cases/1/images/1.png"), 404)
    error(http.post("/v1/study/cases/1/events", json={"event": "rewind"}), 400)
    assert "never viewed" in error(http.post("/v1/study/cases/1/read", json={"confidence": 3}), 409)
    first = http.get("/v1/study/cases/1").json()["condition"]
    http.post("/v1/study/cases/1/events", json={"event": "view"})
    ratings = RATINGS if first != "manual" else {}
    read = {"findings": ["Edema"], "impression": "ok", "confidence": 3, **ratings}
    for bad, words in (({**read, "confidence": 6}, "confidence"), ({**read, "impression": "x" * 4001}, "impression"),
                       ({**read, "findings": ["Dragons"]}, "Dragons"), ({**read, "notes": "x"}, "notes"),
                       ({**read, "findings": ["Edema"] * 15}, "findings")):
        assert words in error(http.post("/v1/study/cases/1/read", json=bad), 400)
    if first == "manual":
        assert "manual" in error(http.post("/v1/study/cases/1/read", json={**read, **RATINGS}), 400)
    else:
        assert "required" in error(http.post("/v1/study/cases/1/read", json={**read, "quality": None}), 400)
    assert http.post("/v1/study/cases/1/read", json=read).status_code == 200
    assert "teaching" in error(http.get("/v1/study/cases/1/reveal"), 409)  # a reader study reveals nothing
    assert "teaching" in error(http.get("/v1/study/teaching-file"), 409)
    failed = [e for e in store.audit_events() if e.endpoint == "/v1/study/read" and e.event == "failed"]
    assert failed and all(e.output is None for e in failed)


def test_teaching_reveal_and_teaching_file(tiny_model, tmp_path):
    studies, clock, _study_id, keys = make_study(tmp_path, conditions=("teaching",), mode="teaching", readers=1)
    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path)
    with serve_in_thread(with_clock(create_app(tiny_model, store, ServeSettings()), clock)) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['R01']}"}) as http:
        assert http.get("/v1/study/cases/1").json()["ai"] is None  # read first
        http.post("/v1/study/cases/1/events", json={"event": "view"})
        assert "first" in error(http.get("/v1/study/cases/1/reveal"), 409)
        saved = http.post("/v1/study/cases/1/read", json={"findings": ["Cardiomegaly"], "confidence": 2})
        assert saved.status_code == 200, saved.text
        shown = http.get("/v1/study/cases/1/reveal").json()
        assert shown["disclaimer"] == DISCLAIMER and "images" not in shown  # no server paths
        assert shown["model"]["reasoning"] == "heart is big" and len(shown["agreement"]["labels"]) == 14
        assert shown["score"]["cases"] == 1 and shown["score"]["labels_scored"] == shown["agreement"]["labels_scored"]
        archive = zipfile.ZipFile(io.BytesIO(http.get("/v1/study/teaching-file").content))
        assert sorted(archive.namelist()) == ["case-0001.html", "index.html"]
        assert DISCLAIMER in archive.read("case-0001.html").decode()
    studies.close()
    store.close()
