"""Folder runs (cxrlm.batch, `cxrlm report DIR --out`): studies grouped by StudyInstanceUID, resumable, refusals
kept as rows, CSV. The tree is built here from the fixture PNGs (real radiographs, so the input gate passes)."""

import csv
import json
import shutil

import numpy as np
import pydicom.uid as uids
import pytest
from PIL import Image

from cxrlm.cli import main
from tests.test_dicom import make_dicom

MARKER_UID = "1.2.826.0.1.3680043.8.498.99999"


@pytest.fixture
def tree(tmp_path, fixture_pngs):
    if len(fixture_pngs) < 3:
        pytest.skip("needs ../shared/data/fixtures")
    root = tmp_path / "in"
    (root / "png" / "sub").mkdir(parents=True)
    shutil.copy(fixture_pngs[0], root / "png" / "a.png")
    shutil.copy(fixture_pngs[1], root / "png" / "sub" / "b.png")
    (root / "dicom").mkdir()
    for name, source in (("frontal.dcm", fixture_pngs[2]), ("second.dcm", fixture_pngs[0])):  # one study
        pixels = np.asarray(Image.open(source).convert("L"))
        make_dicom(root / "dicom" / name, pixels, StudyInstanceUID=MARKER_UID, ViewPosition="PA")
    pixels = np.asarray(Image.open(fixture_pngs[1]).convert("L"))
    make_dicom(root / "dicom" / "other", pixels, StudyInstanceUID=uids.generate_uid(), ViewPosition="PA")  # no suffix
    (root / "bad").mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "bad" / "red.png")  # the gate refuses a colour picture
    (root / "bad" / "broken.png").write_bytes(b"not an image")  # the reader
    (root / ".hidden.png").write_bytes(b"skipped")
    return root


@pytest.fixture
def counted(monkeypatch, tiny_model):
    """The tiny model, counting the studies it is asked about."""
    calls = []
    predict = type(tiny_model).predict

    def counting(study, task, **kw):
        calls.append(task)
        return predict(tiny_model, study, task, **kw)

    monkeypatch.setattr(tiny_model, "predict", counting)
    monkeypatch.setattr("cxrlm.cli.model_options.load_model_from_args", lambda args: tiny_model)
    return calls


def test_find_studies_groups_dicom_by_study_and_hides_the_uid(tree):
    from cxrlm.batch import find_studies

    studies = {s.key: s for s in find_studies(tree)}
    dicom = [s for s in studies.values() if s.key.startswith("dicom-")]
    assert sorted(len(s.files) for s in dicom) == [1, 2]
    assert {"png/a.png", "png/sub/b.png", "bad/red.png", "bad/broken.png"} <= set(studies)
    assert len(studies) == 6 and not any(MARKER_UID in key for key in studies)


def test_the_file_cap_is_checked_before_reading(tree):
    from cxrlm.batch import find_studies
    from cxrlm.errors import InputError

    with pytest.raises(InputError, match="more than 3 image files"):
        find_studies(tree, max_files=3)


def test_too_many_views_in_one_study_is_a_refusal(tmp_path):
    from cxrlm.batch import find_studies
    from cxrlm.limits import MAX_IMAGES

    for i in range(MAX_IMAGES + 1):
        make_dicom(tmp_path / f"{i}.dcm", np.zeros((8, 8), np.uint8), StudyInstanceUID=MARKER_UID)
    [study] = find_studies(tmp_path)
    assert "the limit is 8 views" in study.refusal


def test_an_interrupted_run_resumes_without_redoing_work(tree, tmp_path, counted, capsys):
    out = tmp_path / "results.jsonl"
    argv = ["report", str(tree), "--out", str(out), "--max-new-tokens", "2", "--batch-size", "2", "--json", "--gate", "on"]
    assert main([*argv, "--limit", "3"]) == 0
    assert len(counted) == 1  # in order: two refusals, then the two-file DICOM study
    with out.open("ab") as handle:
        handle.write(b'{"key": "torn')  # a crash mid-write
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len({r["key"] for r in rows}) == 6
    answered = [r for r in rows if "prediction" in r]
    assert len(answered) == 4 and len(counted) == 4  # each study asked once: none redone
    refused = {r["key"]: r["refused"] for r in rows if "refused" in r}
    assert set(refused) == {"bad/red.png", "bad/broken.png"}
    assert "colour photograph" in refused["bad/red.png"] and "\n" not in "".join(refused.values())
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["studies"] == 6 and summary["answered"] == 4 and sum(summary["refused"].values()) == 2
    assert summary["done_now"] == 3
    assert MARKER_UID not in out.read_text()
    calls = len(counted)
    assert main(argv) == 0 and len(counted) == calls  # nothing left to do


def test_csv_output(tree, tmp_path, counted, capsys):
    out = tmp_path / "boxes.csv"
    assert main(["ground", str(tree), "right lung", "--out", str(out), "--format", "csv",
                 "--max-new-tokens", "2", "--gate", "on"]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and list(rows[0]) == ["key", "files", "refused", "boxes"]
    assert sum(bool(r["refused"]) for r in rows) == 2
    assert (tmp_path / "boxes.csv.jsonl").exists()  # the resumable log beside it


def test_a_folder_run_needs_out(tree, capsys):
    assert main(["classify", str(tree)]) == 2
    assert "add --out" in capsys.readouterr().err
