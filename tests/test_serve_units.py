"""Serve building blocks without a model: storage, keys, audit log, rate limits, OpenAI parsing, the worker."""

import threading
import time

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

from sqlalchemy import text

from cxrlm.errors import ConfigError
from cxrlm.serve import openai_format as oa
from cxrlm.serve.security import RateLimiter, bearer_token, check_exposure, is_loopback
from cxrlm.serve.storage import Store
from cxrlm.serve.worker import Cancelled, Job, ModelWorker, QueueFull
from cxrlm.types import XrayImage


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data")
    yield s
    s.close()


def test_keys_are_stored_hashed_and_verify_only_exactly(store):
    key_id, key = store.add_key("ci")
    assert store.verify_key(key) == key_id
    assert store.verify_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.verify_key("cxrlm-nokey-secret") is None and store.verify_key("garbage") is None
    with store.engine.connect() as conn:
        dump = "\n".join(str(r) for r in conn.execute(text("SELECT * FROM api_keys")))
    assert key.split("-", 2)[2] not in dump  # only the salted hash is kept
    assert store.revoke_key(key_id) and store.verify_key(key) is None and not store.has_keys()


def test_study_keeps_pixels_and_only_safe_metadata(store):
    pixels = np.arange(40 * 30, dtype=np.uint32).reshape(40, 30).astype(np.uint8)
    image = XrayImage(pixels=pixels, source="/home/Doe^Jane/scan.dcm", view_position="PA",
                      metadata={"Modality": "DX", "PatientName": "Doe^Jane"})
    study_id = store.save_study(image, "local")
    row = store.study(study_id)
    assert row.image_file == f"{study_id}.png" and row.image_metadata == {"Modality": "DX"}
    again = store.load_study_image(study_id)
    assert np.array_equal(again.pixels, pixels) and again.view_position == "PA"
    assert b"Doe^Jane" not in (store.data_dir / "studies" / row.image_file).read_bytes()
    assert store.study("../../etc/passwd") is None


def test_audit_log_is_append_only_and_interrupted_requests_are_closed(store):
    fields = {"api_key_id": "local", "endpoint": "/v1/cxr/report", "model": "m", "template_version": "t/1",
                  "input_sha256": "0" * 64}
    store.audit_start("a" * 32, **fields)
    store.audit_start("b" * 32, **fields)
    store.audit_end("a" * 32, "completed", output={"x": 1}, timings={"run_s": 1.0})
    assert store.close_interrupted() == 1
    assert [e.event for e in store.audit_events("b" * 32)] == ["started", "interrupted"]
    assert store.close_interrupted() == 0
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET event = 'completed'"))
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    with pytest.raises(ValueError):
        store.audit_end("c" * 32, "completed")


def test_unknown_database_url_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="sqlite:///PATH"):
        Store("mysql://x/y", tmp_path)


def test_exposure_rule():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_exposure("127.0.0.1", has_keys=False)
    check_exposure("0.0.0.0", has_keys=True)
    with pytest.raises(ConfigError, match="--add-key"):
        check_exposure("0.0.0.0", has_keys=False)
    assert bearer_token("Bearer abc") == "abc" and bearer_token("Basic abc") is None and bearer_token(None) is None


def test_rate_limiter_refills_per_key():
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    wait = limiter.acquire("a")
    assert 29 < wait <= 30  # one token every 30 s
    assert limiter.acquire("b") == 0  # keys do not share a bucket
    now[0] += 30
    assert limiter.acquire("a") == 0


def test_openai_messages_are_parsed_and_misuse_is_refused():
    url = "data:image/png;base64,AAAA"
    parsed = oa.parse_messages([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Effusion?"},
    ])
    assert parsed.turns == [("user", "Hi"), ("assistant", "Hello"), ("user", "Effusion?")]
    assert parsed.image_refs == [url]
    bad = [
        [{"role": "user", "content": "no image"}],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],  # no question
        [{"role": "user", "content": [{"type": "audio", "x": 1}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "a"}]},
         {"role": "assistant", "content": "b"},
         {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "c"}]}],
    ]
    for messages in bad:
        with pytest.raises(oa.RequestError):
            oa.parse_messages(messages)
    with pytest.raises(oa.RequestError, match="remote"):
        oa.decode_data_url("https://example.org/x.png", 1000)
    with pytest.raises(oa.RequestError, match="base64"):
        oa.decode_data_url("data:image/png;base64,@@@", 1000)
    with pytest.raises(oa.RequestError, match="limit"):
        oa.decode_data_url("data:image/png;base64," + "A" * 4000, 1000)


def test_worker_runs_one_job_at_a_time_and_refuses_when_full():
    worker = ModelWorker(max_queue=1)
    gate, running, overlap = threading.Event(), [], []

    def slow(job):
        running.append(1)
        overlap.append(len(running))
        gate.wait(5)
        running.pop()
        return "done"

    first = worker.submit(Job(slow, 10))
    time.sleep(0.1)
    second = worker.submit(Job(slow, 10))
    with pytest.raises(QueueFull) as full:
        worker.submit(Job(slow, 10))
    assert full.value.retry_after_s > 0
    gate.set()
    assert first.result(5) == "done" and second.result(5) == "done" and max(overlap) == 1
    worker.stop(5)
    assert not worker.alive


def test_worker_with_threads_runs_jobs_together_for_a_batching_engine():
    worker = ModelWorker(max_queue=4, threads=3)
    barrier = threading.Barrier(3, timeout=5)  # passes only if three jobs run at the same time

    futures = [worker.submit(Job(lambda job: barrier.wait(), 10)) for _ in range(3)]
    assert sorted(f.result(5) for f in futures) == [0, 1, 2]
    worker.stop(5)
    assert not worker.alive


def test_cancel_and_deadline_stop_a_job_at_its_next_text_piece():
    worker = ModelWorker(max_queue=2)

    def generating(job):
        for _ in range(1000):
            job.emit("x")
            time.sleep(0.01)
        return "finished"

    job = Job(generating, 10)
    future = worker.submit(job)
    time.sleep(0.1)
    job.cancel()
    with pytest.raises(Cancelled, match="cancelled"):
        future.result(2)
    with pytest.raises(Cancelled, match="timeout"):
        worker.submit(Job(generating, 0.2)).result(3)
    worker.stop(5)


def run_cli(argv):
    import argparse

    from cxrlm.cli import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["serve", *argv])
    return args.run(args)


def test_cli_add_key_prints_a_working_key_once(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    assert run_cli(["--db", db, "--data-dir", str(tmp_path), "--add-key", "alice"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    store = Store(db, tmp_path)
    assert store.verify_key(key) is not None
    store.close()


def test_cli_refuses_public_host_without_keys_and_missing_model(tmp_path, monkeypatch):
    common = ["--db", f"sqlite:///{tmp_path / 'k.db'}", "--data-dir", str(tmp_path)]
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0"):
        run_cli([*common, "--host", "0.0.0.0"])
    monkeypatch.delenv("CXRLM_MODEL", raising=False)
    monkeypatch.setattr("cxrlm.models.DEFAULT_MODEL_DIR", tmp_path / "no-such-model")
    from cxrlm.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="--model"):
        run_cli(common)
    with pytest.raises(ConfigError, match="--max-queue"):
        run_cli([*common, "--max-queue", "0"])


def test_worker_places_are_taken_before_work_and_given_back():
    worker = ModelWorker(max_queue=2)
    gate = threading.Event()
    running = worker.submit(Job(lambda job: gate.wait(10), 10))
    while worker._running != 1:
        time.sleep(0.01)
    first, second = worker.reserve(), worker.reserve()  # two requests decoding their images
    with pytest.raises(QueueFull):
        worker.reserve()  # a third is refused before it decodes anything
    first.release()  # its image was broken: the place is free again
    third = worker.reserve()
    queued = worker.submit(Job(lambda job: "done", 10), second)
    with pytest.raises(ValueError):
        worker.submit(Job(lambda job: None, 10), second)  # a place holds one job
    second.release()  # no-op: the job holds it
    assert worker.depth == 3  # running, queued, reserved
    third.release()
    gate.set()
    assert queued.result(5) == "done" and running.result(5)
    deadline = time.monotonic() + 5
    while worker.depth and time.monotonic() < deadline:  # the thread counts itself out just after the result
        time.sleep(0.01)
    assert worker.depth == 0
    worker.stop(5)


def test_a_json_body_of_too_many_objects_is_refused_before_it_is_parsed():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from cxrlm.serve.app import BodyLimit

    parsed = []
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: list[dict]):
        parsed.append(len(body))
        return {"n": len(body)}

    app.add_middleware(BodyLimit, max_bytes=1_000_000, max_containers=100)
    client = TestClient(app)
    assert client.post("/echo", json=[{}] * 50).json() == {"n": 50}
    refused = client.post("/echo", json=[{}] * 200)
    assert refused.status_code == 400 and "more than 100 objects or lists" in refused.json()["error"]["message"]
    assert parsed == [50]  # the refused body never reached the parser
