"""cxrlm.pacs against a real PACS (Orthanc + DICOMweb, tests/orthanc.py): search, read with the prior, the SR filed
back and checked through Orthanc's own REST API, one-line errors, bounds, and no identifier anywhere cxrlm writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRIOR_REPORT = "Small left pleural effusion. Heart size normal."


def cxrlm(args, env, cwd, timeout=300):
    """The CLI in a subprocess, as a user runs it: credentials only in the environment."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "cxrlm", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)


def store_text_sr(orthanc, record, folder: Path, text: str) -> None:
    """A radiologist's Basic Text SR in `record`'s study (the prior report --prior auto must find)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    source = pydicom.dcmread(record["files"][0], stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr = FileDataset(str(folder / "report.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        setattr(sr, keyword, getattr(source, keyword))
    sr.SOPClassUID, sr.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    sr.SeriesInstanceUID, sr.SeriesNumber, sr.InstanceNumber = generate_uid(), 50, 1
    sr.Modality, sr.Manufacturer, sr.ValueType = "SR", "Reading room", "CONTAINER"
    sr.CompletionFlag, sr.VerificationFlag, sr.ContinuityOfContent = "COMPLETE", "VERIFIED", "SEPARATE"
    sr.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    item = pydicom.Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", text
    item.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    sr.ContentSequence = [item]
    folder.mkdir(parents=True, exist_ok=True)
    sr.save_as(folder / "report.dcm", enforce_file_format=True)
    orthanc.upload([folder / "report.dcm"])


def _code(value, scheme, meaning):
    import pydicom

    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def orthanc_study(orthanc, uid: str) -> str:
    found = orthanc.rest("/tools/lookup", uid.encode(), method="POST")
    return next(item["ID"] for item in found if item["Type"] == "Study")


def client(orthanc, **bounds):
    from cxrlm.pacs import PacsClient

    return PacsClient.from_env(environ=orthanc.env(), **bounds)


def test_search_read_with_prior_and_sr_filed_back_leave_no_identifier(orthanc, pacs_studies, tmp_path):
    from cxrlm.pacs import study_handle
    from tests.orthanc import MARKER, PASSWORD

    earlier, later = pacs_studies[0], pacs_studies[1]  # patient 0, oldest first
    store_text_sr(orthanc, earlier, tmp_path / "prior-sr", PRIOR_REPORT)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {**orthanc.env(), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}

    search = cxrlm(["pacs", "search", "--json"], env, work)
    assert search.returncode == 0, search.stderr
    handles = [row["study"] for row in __import__("json").loads(search.stdout)["studies"]]
    assert sorted(handles) == sorted(study_handle(s["study_uid"]) for s in pacs_studies)

    read = cxrlm(["pacs", "read", study_handle(later["study_uid"]), "--prior", "auto", "--store-sr",
                  "--max-new-tokens", "8", "--json"], env, work)
    assert read.returncode == 0, read.stderr
    assert f"prior: study {study_handle(earlier['study_uid'])} (2021-03-04), 2 image(s), its report from an SR" \
        in read.stderr
    assert '"disclaimer"' in read.stdout

    # Orthanc's own view: a new SR in the source study, filed under the same patient, referencing both images.
    instances = orthanc.rest(f"/studies/{orthanc_study(orthanc, later['study_uid'])}/instances")
    srs = [i for i in instances if i["MainDicomTags"].get("SOPInstanceUID") not in _sop_uids(later)]
    assert len(srs) == 1 and len(instances) == 3
    tags = orthanc.rest(f"/instances/{srs[0]['ID']}/tags?simplify")
    assert tags["StudyInstanceUID"] == later["study_uid"] and tags["Modality"] == "SR"
    assert tags["PatientID"] == f"{MARKER}000"  # the patient module is copied: the PACS files it with the study
    assert (tags["CompletionFlag"], tags["VerificationFlag"]) == ("PARTIAL", "UNVERIFIED")
    referenced = {ref["ReferencedSOPInstanceUID"] for item in tags["CurrentRequestedProcedureEvidenceSequence"]
                  for series in item["ReferencedSeriesSequence"] for ref in series["ReferencedSOPSequence"]}
    assert referenced == _sop_uids(later)
    assert "research" in str(tags).lower()  # the research-use notice travels with the SR

    # Nothing identifying in what cxrlm printed or wrote, nor the password.
    for run in (search, read):
        assert MARKER not in run.stdout + run.stderr and PASSWORD not in run.stdout + run.stderr
        assert later["study_uid"] not in run.stdout + run.stderr
    written = [p for p in list(work.rglob("*")) + list(home.rglob("*")) if p.is_file()]
    assert all(MARKER.encode() not in p.read_bytes() for p in written), written


def _sop_uids(record) -> set[str]:
    import pydicom

    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in record["files"]}


def test_the_prior_is_the_same_patients_latest_earlier_study_with_its_report(orthanc, pacs_studies, tmp_path):
    from cxrlm.pacs import find_prior, read_prior, read_study

    pacs = client(orthanc)
    by_uid = {s.uid: s for s in pacs.search_studies()}
    for patient in (0, 1):
        earlier, later = [s for s in pacs_studies if s["patient"] == patient]
        assert find_prior(pacs, by_uid[later["study_uid"]]).uid == earlier["study_uid"]
        assert find_prior(pacs, by_uid[earlier["study_uid"]]) is None
    store_text_sr(orthanc, pacs_studies[2], tmp_path / "sr", PRIOR_REPORT)  # patient 1's earlier study
    current = read_study(pacs, by_uid[pacs_studies[3]["study_uid"]])
    assert [image.view_position for image in current.study.images] == ["PA", "LL"]
    prior = read_prior(pacs, current)
    assert prior.info.uid == pacs_studies[2]["study_uid"] and len(current.study.prior.images) == 2
    assert current.study.prior_report == f"Finding: {PRIOR_REPORT}"


def test_a_wrong_password_and_a_stopped_pacs_are_one_line_errors(orthanc, pacs_studies, tmp_path):
    from tests.orthanc import MARKER

    wrong = {**orthanc.env(), "CXRLM_PACS_PASSWORD": "not-the-password"}
    refused = cxrlm(["pacs", "search", "--pacs-query", f"PatientID={MARKER}000"], wrong, tmp_path, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "refused the credentials (HTTP 401" in refused.stderr
    assert "not-the-password" not in refused.stderr and MARKER not in refused.stderr
    orthanc.stop()
    down = cxrlm(["report", "--study", pacs_studies[0]["study_uid"]], orthanc.env(), tmp_path, timeout=120)
    assert down.returncode == 2 and down.stderr.count("\n") == 1
    assert f"the PACS at {orthanc.dicomweb} is not reachable" in down.stderr


def test_bounds_are_checked_before_anything_is_decoded(orthanc, pacs_studies):
    from cxrlm.pacs import PacsError, read_study

    with pytest.raises(PacsError, match="more than 3 studies match: narrow the query"):
        client(orthanc, max_studies=3).search_studies()
    info = client(orthanc).study(pacs_studies[0]["study_uid"])
    with pytest.raises(PacsError, match="more than 1 instances"):
        read_study(client(orthanc, max_instances=1), info)
    with pytest.raises(PacsError, match="exceeds the limit of 10,000 bytes"):
        read_study(client(orthanc, max_bytes=10_000), info)  # a 512 x 512 radiograph is 262,144 bytes


def test_credentials_come_from_the_environment_only():
    from cxrlm.pacs import PacsClient, PacsError

    with pytest.raises(PacsError, match="carries a user or password: remove it"):
        PacsClient.from_env("https://me:secret@pacs.example.org/dicom-web", environ={})
    with pytest.raises(PacsError, match="no PACS given"):
        PacsClient.from_env(None, environ={})
    with pytest.raises(PacsError, match="keep one way to log in"):
        PacsClient.from_env("https://pacs.example.org/dicom-web",
                            environ={"CXRLM_PACS_TOKEN": "t", "CXRLM_PACS_USER": "u", "CXRLM_PACS_PASSWORD": "p"})
    with pytest.raises(PacsError, match="not an http"):
        PacsClient.from_env("ftp://pacs.example.org/", environ={})
    token = PacsClient.from_env("https://pacs.example.org/dicom-web", environ={"CXRLM_PACS_TOKEN": "t0k"})
    assert token._session.headers["Authorization"] == "Bearer t0k" and token._session.auth is None
    assert token.shown_url == "https://pacs.example.org/dicom-web"


def test_study_handles_and_queries_are_checked(orthanc, pacs_studies):
    from cxrlm.pacs import PacsError, study_handle

    pacs = client(orthanc)
    uid = pacs_studies[1]["study_uid"]
    assert pacs.study(study_handle(uid)).uid == uid
    with pytest.raises(PacsError, match="neither a StudyInstanceUID nor a study handle"):
        pacs.study("Robert'); DROP")
    with pytest.raises(PacsError, match="no study s"):
        pacs.study("1.2.3.4")


def test_pacs_options_are_checked_before_any_network_or_model(tmp_path):
    png = tmp_path / "never-read.png"  # each refusal comes before any file is read
    env = {"CXRLM_PACS_URL": "http://127.0.0.1:9/dicom-web"}  # nothing listens there: a check that got that far fails
    cases = [
        (["report", str(png), "--prior", "auto"], "--prior auto finds the prior on a PACS"),
        (["report"], "no image given: pass IMAGE file(s), or --study"),
        (["report", str(png), "--study", "1.2.3"], "drop the IMAGE files"),
        (["classify", "--pacs-query", "PatientName=X"], "--pacs-query 'PatientName=...': give KEY=VALUE"),
        (["report", str(png), "--store-sr"], "--store-sr files the SR into the PACS study"),
        (["pacs", "search", "--from", "March"], "--from takes a date as YYYY-MM-DD"),
    ]
    for args, message in cases:
        result = cxrlm(args, env, tmp_path, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_ground_reads_a_study_named_by_its_handle_with_the_url_as_an_option(orthanc, pacs_studies, tmp_path):
    import json

    from cxrlm.pacs import study_handle

    env = {key: value for key, value in orthanc.env().items() if key != "CXRLM_PACS_URL"}
    result = cxrlm(["ground", "--pacs", orthanc.dicomweb, "--study", study_handle(pacs_studies[2]["study_uid"]),
                    "right lung", "--max-new-tokens", "8", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["task"] == "ground" and output["image_size"] == [512, 512]
