"""`cxrlm study create|results|teaching-file` end to end on synthetic PNG cases with the tiny model."""

import json

import numpy as np
import pytest

from cxrlm.cli import main
from cxrlm.study.store import StudyStore


def _cases(folder, n=6, labels=True):
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    lines = ["case_id,images" + (",Cardiomegaly,Edema" if labels else "")]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        lines.append(f"case{i},img/{i}.png" + (f",{i % 2},{(i // 2) % 2}" if labels else ""))
    (folder / "cases.csv").write_text("\n".join(lines) + "\n")
    return folder / "cases.csv"


def _keys(out: str) -> dict[str, str]:
    return dict(line.split("\t") for line in out.splitlines() if line.startswith("R") and "\t" in line)


def test_create_precomputes_what_the_conditions_need_then_results(tmp_path, tiny_checkpoint, capsys):
    manifest = _cases(tmp_path / "cases")
    store_args = ["--db", f"sqlite:///{tmp_path / 'cxrlm.db'}", "--data-dir", str(tmp_path / "data")]
    assert main(["study", "create", "--cases", str(manifest), "--readers", "3", "--seed", "5", *store_args,
                 "--model", str(tiny_checkpoint), "--device", "cpu", "--max-new-tokens", "4",
                 "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.index("Reader keys")])
    assert summary["cases"] == 6 and summary["readers"] == 3 and summary["warnings"] == []
    keys = _keys(out)
    assert sorted(keys) == ["R01", "R02", "R03"]

    store = StudyStore(store_args[1], tmp_path / "data")
    study = store.study(summary["study"])
    assert study.seed == 5 and study.model["name"] and study.conditions == ["manual", "labels", "reasoning"]
    table = store.assignment_table(study.id)
    assert all(sum(r["reader"] == reader and r["condition"] == c for r in table) == 2
               for reader in keys for c in study.conditions)
    assert {(r["case"], r["condition"]) for r in table} == {(f"case{i}", c) for i in range(6) for c in study.conditions}
    # The stored images are PNGs of the pixels under store-chosen names; every case has a full model output.
    reader = store.verify_reader(keys["R01"])
    for row in store.assignments(reader.id):
        payload = store.case_payload(reader.id, row["position"])
        if payload["condition"] == "reasoning":
            assert set(payload["ai"]["labels"][0]) == {"name", "probability", "present"}
            assert "reasoning" in payload["ai"] and isinstance(payload["ai"]["boxes"], list)
            assert all(0 <= label["probability"] <= 1 for label in payload["ai"]["labels"])
        store.mark_viewed(reader.id, row["position"])
        extra = {} if row["condition"] == "manual" else {"quality": 3, "usefulness": 3, "time_saved": 3, "safety": 3}
        store.submit(reader.id, row["position"], {"findings": ["Cardiomegaly"], "confidence": 3} | extra)
    assert str(store.case_image(reader.id, 1)).startswith(str(tmp_path / "data" / "study" / study.id))

    assert main(["study", "results", study.id[:8], "--out", str(tmp_path / "res"), "--resamples", "200",
                 *store_args]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["responses"] == 6 and "bootstrap" in printed["method"]
    # Cardiomegaly is 1 on the odd cases: the reader called it everywhere, so sensitivity 1 in every condition.
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    assert {c["per_label"]["Cardiomegaly"]["sensitivity"] for c in results["conditions"].values()} <= {1.0, None}
    assert (tmp_path / "res" / "report.html").is_file() and (tmp_path / "res" / "responses.csv").is_file()


def test_a_manual_only_study_loads_no_model_and_teaching_file(tmp_path, capsys):
    manifest = _cases(tmp_path / "cases", n=2, labels=False)
    store_args = ["--db", f"sqlite:///{tmp_path / 'cxrlm.db'}", "--data-dir", str(tmp_path / "data")]
    assert main(["study", "create", "--cases", str(manifest), "--conditions", "manual", "--readers", "2",
                 "--model", str(tmp_path / "no-such-model"), *store_args]) == 0
    study_id = json.loads(capsys.readouterr().out.split("Reader keys")[0])["study"]
    assert main(["study", "teaching-file", study_id, "--reader", "R09", "--out", str(tmp_path / "t"),
                 *store_args]) == 2
    assert "no reader 'R09'" in capsys.readouterr().err


@pytest.mark.parametrize("body, argv, message", [
    ("case_id,images\nA,../x.png\n", [], "leaves the manifest's folder"),
    ("case_id,images\nA,img/0.png\nB,img/1.png\n", ["--conditions", "manual,labels,reasoning"],
     "at least one case per condition"),
    ("case_id,images\nA,img/0.png\n", ["--conditions", "manual,robot"], "unknown condition"),
    ("case_id,images\nA,img/0.png\nB,img/1.png\n", ["--conditions", "manual", "--readers", "0"], "--readers"),
    ("case_id,images\nA,img/0.png\n", ["--conditions", "manual", "--gate", "on"], "case A: "),  # noise, not a chest
])
def test_bad_input_is_one_line_before_the_model_loads(tmp_path, capsys, body, argv, message):
    _cases(tmp_path)
    (tmp_path / "bad.csv").write_text(body)
    code = main(["study", "create", "--cases", str(tmp_path / "bad.csv"), "--readers", "3", *argv,
                 "--model", str(tmp_path / "no-such-model"), "--db", f"sqlite:///{tmp_path / 'x.db'}",
                 "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_results_of_an_unknown_study(tmp_path, capsys):
    assert main(["study", "results", "abcdef12", "--out", str(tmp_path / "r"), "--db",
                 f"sqlite:///{tmp_path / 'x.db'}", "--data-dir", str(tmp_path)]) == 2
    assert "no single study matches" in capsys.readouterr().err


def test_the_docs_case_folder_from_shared_data(shared_data, tmp_path, capsys):
    """docs/STUDY.md's first step: scripts/study_cases_nih14.py builds a manifest `study create` accepts."""
    import importlib.util
    from pathlib import Path

    from cxrlm.study.manifest import read_manifest

    path = Path(__file__).resolve().parents[1] / "scripts" / "study_cases_nih14.py"
    spec = importlib.util.spec_from_file_location("study_cases_nih14", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    row = {"finding_labels": "Consolidation|Pneumonia|Nodule", "Consolidation": "1", "Pneumonia": "1", "Nodule": "1"}
    ref = script.reference(row)
    assert (ref["Consolidation"], ref["Pneumonia"], ref["Lung Lesion"], ref["No Finding"]) == ("1", "1", "1", "0")
    assert (ref["Cardiomegaly"], ref["Lung Opacity"], ref["Fracture"]) == ("0", "", "")
    assert script.main(["--data", str(shared_data), "--out", str(tmp_path / "cases"), "--cases", "6"]) == 0
    cases = read_manifest(tmp_path / "cases" / "cases.csv")
    assert len(cases) == 6 and sum(c.reference["No Finding"] for c in cases) == 3
    assert all(c.images[0].name.startswith("case-") for c in cases)
