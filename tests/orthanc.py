"""A real PACS for the tests: Orthanc with its DICOMweb plugin (Debian packages `orthanc`, `orthanc-dicomweb`), on a
free loopback port with a throwaway configuration and storage folder, plus synthetic chest radiograph studies built
from ../shared/data images whose identifying tags all carry MARKER (so a test can grep for leaks).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from datetime import date
from pathlib import Path

import numpy as np

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
MARKER = "ZZMARKERZZ"  # every identifying tag of the synthetic studies contains this; it must never leak
USER, PASSWORD = "cxrlm", "orthanc-test-secret"


def available() -> str | None:
    """Why Orthanc cannot run here, or None when it can."""
    if not Path(ORTHANC).exists():
        return "no Orthanc (apt-get install orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.exists():
        return f"no DICOMweb plugin at {DICOMWEB_PLUGIN} (apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Orthanc:
    """One Orthanc process; `stop()` and `start()` again keep its storage (for outage and recovery tests)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        config = {
            "Name": "cxrlm-test", "HttpPort": self.port, "DicomServerEnabled": False,
            "StorageDirectory": str(self.folder / "storage"), "IndexDirectory": str(self.folder / "storage"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpTimeout": 30, "StableAge": 1,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "orthanc.json").write_text(json.dumps(config))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web"

    def env(self) -> dict[str, str]:
        """The environment a cxrlm process needs to reach this PACS (credentials never go on a command line)."""
        return {"CXRLM_PACS_URL": self.dicomweb, "CXRLM_PACS_USER": USER, "CXRLM_PACS_PASSWORD": PASSWORD}

    def start(self, timeout: float = 30.0) -> Orthanc:
        log = open(self.folder / "orthanc.log", "ab")
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.rest("/system")
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"Orthanc did not answer on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def rest(self, path: str, data: bytes | None = None, method: str | None = None):
        """Orthanc's own REST API (not DICOMweb): the independent view the tests check cxrlm's work against."""
        import base64
        import urllib.request

        request = urllib.request.Request(self.base + path, data=data, method=method)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        if data is not None:
            request.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def upload(self, paths) -> list[dict]:
        return [self.rest("/instances", Path(p).read_bytes()) for p in paths]

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def write_radiograph(path: Path, pixels: np.ndarray, *, patient: int, study_date: date, view: str,
                     study_uid: str, series_uid: str, series_number: int) -> Path:
    """One DX radiograph whose identifying tags all contain MARKER (8-bit MONOCHROME2, uncompressed)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName = f"{MARKER}^Patient{patient}"
    ds.PatientID = f"{MARKER}{patient:03d}"
    ds.PatientBirthDate, ds.PatientSex = "19500101", "O"
    ds.OtherPatientIDs = f"{MARKER}-other"
    ds.InstitutionName = f"{MARKER} Hospital"
    ds.ReferringPhysicianName = f"{MARKER}^Doctor"
    ds.AccessionNumber = f"{MARKER[:8]}{patient:03d}{study_date:%y}"[:16]
    ds.StudyID = f"{patient}{study_date:%y}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyDescription = "XR CHEST 2 VIEWS"
    ds.SeriesDescription = f"CHEST {view}"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", view
    ds.PatientOrientation = ["P", "F"] if view in ("PA", "AP") else ["A", "F"]
    ds.SeriesNumber, ds.InstanceNumber = series_number, 1
    ds.Manufacturer = "cxrlm synthetic"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def synthetic_studies(images: list[Path], folder: Path, patients: int = 2,
                      dates: tuple[date, ...] = (date(2021, 3, 4), date(2023, 9, 18))) -> list[dict]:
    """`patients` patients with one study per date, each a frontal (PA) and a lateral (LL) radiograph.

    The pixels are real chest radiographs from ../shared/data (all frontal: the lateral is another image,
    labelled LL - the tests check plumbing, not anatomy). Returns one record per study, oldest first per patient.
    """
    from PIL import Image
    from pydicom.uid import generate_uid

    studies, pick = [], 0
    for patient in range(patients):
        for study_date in dates:
            study_uid = generate_uid()
            files = []
            for number, view in enumerate(("PA", "LL"), start=1):
                pixels = np.asarray(Image.open(images[pick % len(images)]).convert("L"))
                pick += 1
                name = folder / f"p{patient}" / study_date.isoformat() / f"{view}.dcm"
                files.append(write_radiograph(name, pixels, patient=patient, study_date=study_date, view=view,
                                              study_uid=study_uid, series_uid=generate_uid(), series_number=number))
            studies.append({"patient": patient, "date": study_date, "study_uid": study_uid, "files": files})
    return studies
