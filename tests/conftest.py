"""Shared test fixtures. Real images come from ../shared/data and skip cleanly when it is absent."""

import os
from pathlib import Path

import pytest

# Most tests run models on synthetic arrays, which the input gate rightly refuses: it only warns in the test session
# (subprocesses included). tests/test_gate.py sets the gate on explicitly.
os.environ.setdefault("CXRLM_GATE", "warn")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixture_pngs(shared_data) -> list[Path]:
    return sorted((shared_data / "fixtures" / "nih14" / "images").glob("*.png"))


@pytest.fixture(scope="session")
def real_dicom(shared_data) -> Path:
    return next((shared_data / "fixtures" / "dicom").glob("*.dcm"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight Qwen2.5-VL folder in the exact layout of a real checkpoint (built once per test run)."""
    from cxrlm.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from cxrlm.models import load_model

    return load_model(tiny_checkpoint, device="cpu")


@pytest.fixture
def xray():
    """A synthetic 8-bit radiograph-like image (no real data needed)."""
    import numpy as np

    from cxrlm.types import XrayImage

    rng = np.random.default_rng(0)
    return XrayImage(pixels=rng.integers(0, 256, size=(300, 240), dtype=np.uint8), source="synthetic.png")


@pytest.fixture
def orthanc(tmp_path):
    """A real, empty Orthanc PACS with DICOMweb on a free loopback port (tests/orthanc.py); stopped afterwards."""
    from tests import orthanc as pacs

    if reason := pacs.available():
        pytest.skip(reason)
    with pacs.Orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def pacs_studies(orthanc, fixture_pngs, tmp_path):
    """Two patients x two dates, each study a PA and an LL radiograph with MARKER in every identifying tag,
    uploaded to `orthanc`. Records (oldest study first per patient) as tests/orthanc.py's synthetic_studies."""
    from tests.orthanc import synthetic_studies

    studies = synthetic_studies(fixture_pngs, tmp_path / "pacs-source")
    orthanc.upload(path for study in studies for path in study["files"])
    return studies
