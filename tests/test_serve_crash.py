"""A server killed with SIGKILL mid-request loses nothing it had accepted: the audit row was written first.

Starts `cxrlm serve` as a real subprocess on loopback, kills it while it generates, restarts the server on the
same store, and checks that the request is recorded as started and then closed as interrupted.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from cxrlm.serve.app import ServeSettings, create_app, serve_in_thread
from cxrlm.serve.storage import Store

# Only the serve verb, so this test does not depend on the other verbs' modules.
LAUNCH = (
    "import argparse, sys; from cxrlm.cli import serve; p = argparse.ArgumentParser(); "
    "serve.register(p.add_subparsers(dest='verb')); a = p.parse_args(sys.argv[1:]); sys.exit(a.run(a))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(checkpoint, tmp_path, port) -> subprocess.Popen:
    args = ["serve", "--model", str(checkpoint), "--device", "cpu", "--port", str(port),
            "--db", f"sqlite:///{tmp_path / 'cxrlm.db'}", "--data-dir", str(tmp_path)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the server did not become ready in 90 s")


def test_kill_9_mid_request_then_restart(tiny_checkpoint, tiny_model, tmp_path):
    from tests.test_serve_api import png_bytes

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(tiny_checkpoint, tmp_path, port)
    try:
        study = httpx.post(f"{url}/v1/studies", files={"file": ("a.png", png_bytes(), "image/png")}).json()
        body = {"study_id": study["id"], "max_new_tokens": 1000, "stream": True}
        with httpx.stream("POST", f"{url}/v1/cxr/report", json=body, timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # the model is generating
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)

    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path)
    events = [(e.request_id, e.event) for e in store.audit_events()]
    assert [event for _, event in events] == ["started"]  # written before generating, survived the kill
    store.close()

    # Restart on the same store. In-process, to keep CI short: the start-up path (the app's lifespan) is the
    # same one `cxrlm serve` runs, and the model is the same checkpoint.
    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path)
    with serve_in_thread(create_app(tiny_model, store, ServeSettings())) as again:
        assert httpx.get(f"{again}/v1/studies/{study['id']}").status_code == 200  # the study survived too
        assert httpx.get(f"{again}/readyz").status_code == 200
    rows = store.audit_events(events[0][0])
    assert [r.event for r in rows] == ["started", "interrupted"]
    assert rows[0].input_sha256 == rows[1].input_sha256 and rows[0].endpoint == "/v1/cxr/report"
    store.close()


MARKER = "CXRLM-MARK-0451"  # 15 characters: fits every VR, SH included
IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "ReferringPhysicianName", "StudyDescription", "OtherPatientIDs", "PatientAddress",
                    "InstitutionAddress", "OperatorsName", "PerformingPhysicianName", "StudyID")


def marked_dicom(path):
    """A 2500x2500 12-bit DX (12.5 MB: decoding it takes a while) with the marker in every identifying tag."""
    import numpy as np

    from tests.test_dicom import make_dicom

    pixels = np.random.default_rng(0).integers(0, 4096, size=(2500, 2500), dtype=np.uint16)
    tags = {tag: MARKER for tag in IDENTIFYING_TAGS} | {"PatientBirthDate": "19410807", "StudyDate": "20190312"}
    return make_dicom(path, pixels, bits_stored=12, **tags).read_bytes()


def files_with(folder, needle: bytes) -> list:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_kill_9_during_uploads_leaves_no_patient_data(tiny_checkpoint, tiny_model, tmp_path):
    """Issue 33 case 2: uploads were written whole to <data-dir>/tmp while decoding, and survived a kill."""
    data = tmp_path / "data"
    dicom = marked_dicom(tmp_path / "marked.dcm")
    assert MARKER.encode() in dicom
    port = free_port()
    proc = start(tiny_checkpoint, data, port)
    boundary = "cxrlm0451"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{MARKER}.dcm\"\r\n"
            "Content-Type: application/dicom\r\n\r\n").encode() + dicom + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    sockets = []
    try:
        for _ in range(3):  # three uploads decoding at once when the server dies
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head + body)
            sockets.append(sock)
        deadline = time.monotonic() + 1.0  # the server reads the bodies, then decodes (a second or more each)
        while time.monotonic() < deadline and not list((data / "tmp").glob("upload-*")):
            time.sleep(0.02)  # (a server that writes uploads to disk is killed as soon as one is there)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
        for sock in sockets:
            sock.close()
    assert files_with(data, MARKER.encode()) == []  # nothing was ever written
    # An earlier server's leftover upload is removed when the next one starts.
    (data / "tmp").mkdir(exist_ok=True)
    (data / "tmp" / "upload-left-behind").write_bytes(dicom)
    store = Store(f"sqlite:///{data / 'cxrlm.db'}", data)
    with serve_in_thread(create_app(tiny_model, store, ServeSettings())) as again:
        assert httpx.get(f"{again}/readyz").status_code == 200
    store.close()
    assert files_with(data, MARKER.encode()) == []
