"""`cxrlm pacs watch` (cxrlm/pacs/watch.py, watch_state.py): its state, and against a real Orthanc (tests/orthanc.py):
exactly one SR per study across kill -9 and restart, recovery from a PACS outage, no identifier anywhere."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from cxrlm.errors import ConfigError
from cxrlm.pacs.watch import backoff, sr_uid, unreachable
from cxrlm.pacs.watch_state import WatchState, scrub
from tests.orthanc import MARKER, synthetic_studies, write_radiograph

UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"


def test_state_keys_studies_by_a_keyed_hash_kept_in_the_file(tmp_path):
    import hashlib

    state = WatchState(tmp_path / "watch.sqlite")
    key = state.key(UID)
    assert key != hashlib.sha256(UID.encode()).hexdigest() and len(key) == 64
    state.claim(key)
    state.done(key)
    state.close()
    again = WatchState(tmp_path / "watch.sqlite")
    assert again.key(UID) == key and again.row(key).state == "done" and not again.is_due(key)
    assert WatchState(tmp_path / "other.sqlite").key(UID) != key  # another file, another secret
    again.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("watch.sqlite*"))
    assert UID.encode() not in stored and b"498.123" not in stored
    assert sqlite3.connect(tmp_path / "watch.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_study_fails_after_max_attempts_and_a_refusal_is_final(tmp_path):
    state = WatchState(tmp_path / "watch.sqlite")
    key = state.key(UID)
    assert state.claim(key) == 1
    assert state.retry(key, f"HTTPError: 500 for {UID}", 0.0, max_attempts=2) == "retry"
    assert state.is_due(key) and UID not in state.row(key).reason
    assert state.claim(key) == 2
    assert state.retry(key, "HTTPError: 500", 0.0, max_attempts=2) == "failed"
    assert not state.is_due(key)
    other = state.key(UID + "1")
    state.claim(other)
    state.release(other, delay=60)  # the PACS was down: the attempt is given back, the study waits
    assert state.row(other).attempts == 0 and not state.is_due(other)
    state.claim(other)
    state.refused(other, "not a chest radiograph: looks like a hand")
    assert not state.is_due(other)
    assert [r.state for r in state.problems()] == ["failed", "refused"]
    state.close()


def test_one_watcher_per_state_file(tmp_path):
    state = WatchState(tmp_path / "watch.sqlite")
    with pytest.raises(ConfigError, match="another `cxrlm pacs watch`"):
        WatchState(tmp_path / "watch.sqlite")
    state.close()
    WatchState(tmp_path / "watch.sqlite").close()  # free again once the first is gone
    (tmp_path / "not-a-db.sqlite").write_text("hello " * 1000)
    with pytest.raises(ConfigError, match="writable --state"):
        WatchState(tmp_path / "not-a-db.sqlite")


def test_backoff_doubles_with_jitter_up_to_its_cap():
    rng = random.Random(0)
    delays = [[backoff(attempt, 2.0, 60.0, rng) for _ in range(200)] for attempt in range(1, 9)]
    for attempt, sample in enumerate(delays, start=1):
        full = min(60.0, 2.0 * 2 ** (attempt - 1))
        assert full / 2 <= min(sample) and max(sample) <= full
        assert max(sample) - min(sample) > full / 4  # jittered, not one value
    assert max(delays[-1]) <= 60.0


def test_the_sr_uid_is_fixed_by_study_and_model():
    assert sr_uid(UID, "tiny|v1") == sr_uid(UID, "tiny|v1")
    assert sr_uid(UID, "tiny|v1") != sr_uid(UID, "tiny|v2") != sr_uid(UID + "1", "tiny|v1")
    assert UID not in sr_uid(UID, "tiny|v1") and len(sr_uid(UID, "tiny|v1")) <= 64


def test_what_counts_as_an_unreachable_pacs():
    import requests

    def http(status):
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(response=response)

    assert unreachable(requests.ConnectionError()) and unreachable(http(503))
    assert not unreachable(http(404)) and not unreachable(ValueError("x"))
    try:
        try:
            raise requests.ConnectionError("refused")
        except requests.ConnectionError as err:
            raise RuntimeError("wrapped") from err
    except RuntimeError as wrapped:
        assert unreachable(wrapped)


def test_scrub_blanks_the_uids():
    assert scrub(f"404 for url http://pacs/studies/{UID}/series/1.2.3.4\nnext (score 0.12, v1.2.3)") == (
        "404 for url http://pacs/studies/<uid>/series/<uid>\\nnext (score 0.12, v1.2.3)")


# Against a real Orthanc ---------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def watch(orthanc, checkpoint, state, *extra, out: Path):
    """`cxrlm pacs watch` as its own process (so that it can be killed), output into `out`.{stdout,stderr}."""
    command = [sys.executable, "-m", "cxrlm", "pacs", "watch", "--model", str(checkpoint), "--state", str(state),
               "--since", "2000-01-01", "--max-new-tokens", "2", "--interval", "0.3", "--backoff", "0.2",
               "--backoff-cap", "1", "--gate", "on", *extra]
    env = os.environ | orthanc.env() | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=open(f"{out}.stdout", "w"),
                            stderr=open(f"{out}.stderr", "w"))


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def done_count(state: Path) -> int:
    try:
        from cxrlm.pacs.watch_state import read_counts

        return read_counts(state).get("done", 0)
    except sqlite3.Error:  # not created yet
        return 0


def cxrlm_srs(orthanc, study_uid: str) -> list[dict]:
    """The SR instances in a study, by Orthanc's own REST API (not DICOMweb), with their tags (content included)."""
    [found] = orthanc.rest("/tools/lookup", study_uid.encode(), "POST")
    series = orthanc.rest(f"/studies/{found['ID']}/series")
    return [orthanc.rest(f"/instances/{instance}/simplified-tags") for s in series
            if s["MainDicomTags"].get("Modality") == "SR" for instance in s["Instances"]]


def assert_one_sr_each(orthanc, studies) -> None:
    counts = {s["study_uid"]: len(cxrlm_srs(orthanc, s["study_uid"])) for s in studies}
    assert sorted(counts.values()) == [1] * len(studies), counts
    tags = cxrlm_srs(orthanc, studies[0]["study_uid"])[0]
    assert tags["Manufacturer"] == "cxrlm" and tags["CompletionFlag"] == "PARTIAL"
    assert tags["VerificationFlag"] == "UNVERIFIED" and tags["StudyInstanceUID"] == studies[0]["study_uid"]


def assert_no_marker(*paths: Path) -> None:
    for path in paths:
        for file in ([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]):
            assert MARKER.encode() not in file.read_bytes(), f"{MARKER} leaked into {file}"


def noise_study(folder: Path) -> dict:
    """A 'DX chest' study whose pixels are noise, the earliest of patient 0: the input gate refuses it, and so
    patient 0's next study goes on without this prior."""
    import numpy as np
    from pydicom.uid import generate_uid

    uid = generate_uid()
    pixels = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    path = write_radiograph(folder / "noise.dcm", pixels, patient=0, study_date=date(2019, 5, 6), view="PA",
                            study_uid=uid, series_uid=generate_uid(), series_number=1)
    return {"study_uid": uid, "files": [path]}


def test_watch_files_one_sr_per_study_across_kill_9_and_restart(orthanc, fixture_pngs, tiny_checkpoint, tmp_path):
    studies = synthetic_studies(fixture_pngs, tmp_path / "source", patients=10)
    refused = noise_study(tmp_path / "source")
    orthanc.upload([path for study in studies + [refused] for path in study["files"]])
    state = tmp_path / "state" / "watch.sqlite"

    first = watch(orthanc, tiny_checkpoint, state, out=tmp_path / "first")
    try:
        wait_for(lambda: done_count(state) >= 3, 300, "three studies done")
        first.send_signal(signal.SIGKILL)  # kill -9, mid-run
        first.wait(30)
    finally:
        first.kill()
    killed_at = done_count(state)
    assert killed_at < len(studies), "the kill came after the whole run: it tested nothing"

    second = watch(orthanc, tiny_checkpoint, state, "--once", out=tmp_path / "second")
    assert second.wait(300) == 0, (tmp_path / "second.stderr").read_text()[-2000:]
    summary = json.loads((tmp_path / "second.stdout").read_text())
    assert summary["state"] == {"done": 20, "refused": 1}, summary
    assert summary["this_run"]["done"] == 20 - killed_at
    [reason] = summary["refused"]
    assert reason.startswith("not a chest radiograph: looks like a synthetic image") and "score" not in reason
    assert_one_sr_each(orthanc, studies)
    assert cxrlm_srs(orthanc, refused["study_uid"]) == []
    first_of_patient_0 = next(s for s in studies if s["patient"] == 0)
    [sr] = cxrlm_srs(orthanc, first_of_patient_0["study_uid"])
    assert "prior study left out: not a chest radiograph" in json.dumps(sr)

    third = watch(orthanc, tiny_checkpoint, state, "--once", out=tmp_path / "third")  # nothing left to do
    assert third.wait(300) == 0
    assert json.loads((tmp_path / "third.stdout").read_text())["this_run"]["done"] == 0
    assert_one_sr_each(orthanc, studies)
    progress = (tmp_path / "second.stderr").read_text()
    assert "studies/min" in progress and "Research and education use only" in progress
    assert_no_marker(state.parent, *tmp_path.glob("first.std*"), *tmp_path.glob("second.std*"),
                     *tmp_path.glob("third.std*"))
    for study in studies:  # no UID in the state either
        assert study["study_uid"].encode() not in b"".join(p.read_bytes() for p in state.parent.iterdir())


def test_watch_recovers_when_the_pacs_goes_down_and_comes_back(orthanc, pacs_studies, tiny_checkpoint, tmp_path):
    state = tmp_path / "watch.sqlite"
    process = watch(orthanc, tiny_checkpoint, state, out=tmp_path / "run")
    stderr = tmp_path / "run.stderr"
    try:
        wait_for(lambda: done_count(state) >= 1, 300, "a first study done")
        orthanc.stop()
        wait_for(lambda: stderr.read_text().count("PACS unreachable") >= 2, 60, "the watcher to see the outage")
        orthanc.start()
        wait_for(lambda: done_count(state) == len(pacs_studies), 300, "every study done after the outage")
        process.send_signal(signal.SIGTERM)  # a clean stop
        assert process.wait(60) == 0, stderr.read_text()[-2000:]
    finally:
        process.kill()
    assert json.loads((tmp_path / "run.stdout").read_text())["state"] == {"done": len(pacs_studies)}
    assert_one_sr_each(orthanc, pacs_studies)
    assert_no_marker(tmp_path / "run.stdout", stderr, state)


def test_once_gives_up_on_a_pacs_that_never_answers(tiny_model, tmp_path):
    from cxrlm.pacs import PacsClient
    from cxrlm.pacs.watch import Watcher, WatchOptions
    from tests.orthanc import free_port

    client = PacsClient(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=(0.5, 0.5))
    state = WatchState(tmp_path / "watch.sqlite")
    options = WatchOptions(once=True, max_attempts=2, backoff_s=0.01, backoff_cap_s=0.02)
    with open(tmp_path / "progress", "w") as out:
        progress = Watcher(tiny_model, client, state, options, out=out).run()
    assert progress.pacs_down and progress.done == 0 and state.counts() == {}
    assert (tmp_path / "progress").read_text().count("PACS unreachable") == 2
    state.close()


def test_a_poll_the_pacs_refuses_is_reported_and_retried(orthanc, tiny_model, tmp_path):
    from cxrlm.pacs import PacsClient
    from cxrlm.pacs.watch import Watcher, WatchOptions

    client = PacsClient(orthanc.dicomweb, user="cxrlm", password="wrong")
    state = WatchState(tmp_path / "watch.sqlite")
    options = WatchOptions(once=True, max_attempts=2, backoff_s=0.01, backoff_cap_s=0.02)
    with open(tmp_path / "progress", "w") as out:
        progress = Watcher(tiny_model, client, state, options, out=out).run()
    assert "refused the credentials" in progress.pacs_down and progress.done == 0
    assert (tmp_path / "progress").read_text().count("poll") == 2
    state.close()


def test_a_crash_between_storing_and_marking_done_files_no_second_sr(orthanc, pacs_studies, tiny_model, tmp_path):
    from cxrlm.pacs import PacsClient
    from cxrlm.pacs.watch import Watcher, WatchOptions

    class Crash(BaseException):
        """What kill -9 would do right after the STOW: nothing of the watcher runs on."""

    client = PacsClient.from_env(environ=orthanc.env())
    options = WatchOptions(since=date(2000, 1, 1), once=True, max_new_tokens=2, gate="warn", prior=False)
    state = WatchState(tmp_path / "watch.sqlite")

    def crash(key):
        raise Crash

    state.done = crash
    with pytest.raises(Crash):
        Watcher(tiny_model, client, state, options).run()
    state.close()
    assert [len(cxrlm_srs(orthanc, s["study_uid"])) for s in pacs_studies].count(1) == 1  # one stored, not marked

    state = WatchState(tmp_path / "watch.sqlite")
    progress = Watcher(tiny_model, client, state, options).run()
    assert progress.already_filed == 1 and progress.done == len(pacs_studies)
    assert state.counts() == {"done": len(pacs_studies)}
    state.close()
    assert_one_sr_each(orthanc, pacs_studies)
