"""Load and crash: N clients for T seconds against a real `cxrlm serve`, killed with SIGKILL at a random moment.

    python benchmarks/serve_load_crash.py --clients 50 --seconds 60

Builds the tiny random-weight checkpoint (cxrlm.models.tiny: plumbing, not answers) in --work, starts
`cxrlm serve` on 127.0.0.1 as a subprocess, and runs --clients threads that upload studies (PNG and DICOM),
ask the task endpoints (by study id and by data URL) and chat, each request bounded by a timeout. At a random
moment in the second quarter of the run the server gets SIGKILL and is restarted at once on the same data folder;
the clients carry on (connection errors while it is down are counted, not retried) for T seconds in all and at least
T/4 after the restart. Afterwards it reports
requests by status, p50/p95 latency of answered requests, and lost records: results and studies the server
accepted (200 with a result id, 201 with a study id) that the restarted server no longer has. Also checks
SQLite's integrity and that no file under the data folder holds the marker set in the DICOM uploads' tags.
Requests go only to 127.0.0.1. Not a test: the figures go to docs/SERVING.md by hand.
"""

import argparse
import base64
import collections
import io
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MARKER = "CXRLM-MARK-0451"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, data: Path, port: int, log) -> subprocess.Popen:
    import httpx

    command = [sys.executable, "-m", "cxrlm", "serve", "--model", str(checkpoint), "--device", "cpu",
               "--port", str(port), "--data-dir", str(data), "--rate-limit", "0"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not become ready in 180 s")


def png_bytes(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(192, 160), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes() -> bytes:
    """A small 12-bit DX whose identifying tags all hold MARKER."""
    import numpy as np
    import pydicom.uid as uids
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uids.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uids.generate_uid()
    for tag in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName", "ReferringPhysicianName",
                "StudyDescription", "OtherPatientIDs", "PatientAddress", "OperatorsName", "StudyID"):
        setattr(ds, tag, MARKER)
    pixels = np.random.default_rng(0).integers(0, 4096, size=(256, 224), dtype=np.uint16)
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "DX", 256, 224, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 12, 11
    ds.PixelRepresentation, ds.PixelData = 0, pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class Load:
    """The clients' shared record: (kind, status, seconds) per request, and what the server said it kept."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, float]] = []
        self.results: list[str] = []  # result ids answered with 200
        self.studies: list[str] = []  # study ids answered with 201

    def add(self, kind: str, status: str, seconds: float, result=None, study=None):
        with self.lock:
            self.requests.append((kind, status, seconds))
            if result:
                self.results.append(result)
            if study:
                self.studies.append(study)


def client(index: int, url: str, stop_at: list, load: Load, images: dict, tokens: int, timeout: float):
    import httpx

    rng = random.Random(index)
    studies: list[str] = []
    with httpx.Client(base_url=url, timeout=timeout) as http:
        while time.monotonic() < stop_at[0]:  # a list: moved on if the restart was slow
            kind = rng.choice(["upload", "upload_dicom", "classify", "ground", "report", "chat", "chat_url"])
            if kind in ("classify", "ground", "report", "chat") and not studies:
                kind = "upload"
            start = time.monotonic()
            try:
                response = send(http, kind, rng, studies, images, tokens)
            except httpx.HTTPError as err:
                load.add(kind, type(err).__name__, time.monotonic() - start)
                time.sleep(0.2)  # the server is down (killed, restarting): do not spin
                continue
            seconds = time.monotonic() - start
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            result = response.headers.get("X-Cxrlm-Result-Id") or (body.get("cxrlm") or {}).get("result_id")
            study = body.get("id") if response.status_code == 201 else None
            if study:
                studies.append(study)
            load.add(kind, str(response.status_code), seconds, result if response.status_code == 200 else None,
                     study)
            if response.status_code == 429:
                time.sleep(min(float(response.headers.get("Retry-After", 1)), 2.0))


def send(http, kind: str, rng: random.Random, studies: list, images: dict, tokens: int):
    if kind.startswith("upload"):
        name, data, media = ("x.dcm", images["dicom"], "application/dicom") if kind == "upload_dicom" else (
            "x.png", images["png"], "image/png")
        return http.post("/v1/studies", files={"file": (name, data, media)})
    ref = f"cxrlm://study/{rng.choice(studies)}" if studies else None
    if kind == "chat_url" or kind == "chat":
        url = images["png_url"] if kind == "chat_url" else ref
        message = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Findings?"}]
        return http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": message}],
                                                       "max_tokens": tokens})
    body = {"study_id": ref.rsplit("/", 1)[1], "max_new_tokens": tokens}
    if kind == "ground":
        body["phrase"] = "right lung"
    return http.post(f"/v1/cxr/{kind}", json=body)


def lost(url: str, load: Load) -> tuple[int, int]:
    import httpx

    with httpx.Client(base_url=url, timeout=30) as http:
        results = sum(http.get(f"/v1/results/{rid}").status_code != 200 for rid in load.results)
        studies = sum(http.get(f"/v1/studies/{sid}").status_code != 200 for sid in load.studies)
    return results, studies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-new-tokens", type=int, default=4, help="tokens per answer")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request, client side")
    parser.add_argument("--seed", type=int, default=0, help="chooses the moment of the kill")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cxrlm-load-crash"))
    args = parser.parse_args()

    from cxrlm.models.tiny import build_tiny_checkpoint

    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.work / "tiny-qwen2_5_vl"
    if not (checkpoint / "config.json").exists():
        build_tiny_checkpoint(checkpoint)
    data = args.work / f"data-{int(time.time())}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    png = png_bytes(1)
    images = {"png": png, "dicom": dicom_bytes(), "png_url": "data:image/png;base64," + base64.b64encode(png).decode()}
    kill_after = random.Random(args.seed).uniform(0.25, 0.5) * args.seconds  # leaves time after the restart
    load, log = Load(), open(args.work / "server.log", "ab")
    load_before = os.getloadavg()  # other work on the machine (shared CPUs)

    proc = start_server(checkpoint, data, port, log)
    started = time.monotonic()
    stop_at = [started + args.seconds]
    threads = [threading.Thread(target=client, args=(i, url, stop_at, load, images, args.max_new_tokens,
                                                       args.timeout), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_at = time.monotonic() - started
    restart = time.monotonic()
    proc = start_server(checkpoint, data, port, log)
    down_s = time.monotonic() - restart
    stop_at[0] = max(stop_at[0], time.monotonic() + args.seconds / 4)
    for thread in threads:
        thread.join(args.timeout + args.seconds)
    ran_s = time.monotonic() - started
    load_average = os.getloadavg()
    try:
        lost_results, lost_studies = lost(url, load)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    with sqlite3.connect(data / "cxrlm.db") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        interrupted = db.execute("SELECT count(*) FROM audit_log WHERE event = 'interrupted'").fetchone()[0]
    marked = [str(p) for p in data.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]

    by_status = collections.Counter(status for _, status, _ in load.requests)
    answered = [s for _, status, s in load.requests if status.isdigit()]
    ok = [s for _, status, s in load.requests if status in ("200", "201")]
    report = {
        "clients": args.clients, "seconds": round(ran_s, 1), "max_new_tokens": args.max_new_tokens,
        "killed_at_s": round(killed_at, 1), "restart_s": round(down_s, 1), "requests": len(load.requests),
        "by_status": dict(sorted(by_status.items())),
        "5xx": sum(n for status, n in by_status.items() if status.startswith("5")),
        "p50_s": round(percentile(answered, 50), 3), "p95_s": round(percentile(answered, 95), 3),
        "p50_ok_s": round(percentile(ok, 50), 3), "p95_ok_s": round(percentile(ok, 95), 3),
        "accepted_results": len(load.results), "lost_results": lost_results,
        "accepted_studies": len(load.studies), "lost_studies": lost_studies,
        "interrupted_audit_rows": interrupted, "sqlite_integrity": integrity, "files_with_marker": marked,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_average], "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=1))
    return 0 if report["5xx"] == 0 and not lost_results and not lost_studies and not marked else 1


if __name__ == "__main__":
    sys.exit(main())
