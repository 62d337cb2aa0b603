"""The study store (what each condition shows, order, active time, validation, teaching reveal) and the results of
a small synthetic study, checked against a hand computation."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from cxrlm.errors import InputError
from cxrlm.pathologies import CHEXPERT14
from cxrlm.study.design import READER_CONDITIONS, make_design
from cxrlm.study.results import compute, write_results
from cxrlm.study.store import CaseInput, StudyConflict, StudyStore

# Three cases; only Cardiomegaly and Edema are labelled (every other label blank, so never scored).
TRUTH = {"c1": {"Cardiomegaly": 1, "Edema": 0}, "c2": {"Cardiomegaly": 0, "Edema": 1},
         "c3": {"Cardiomegaly": 1, "Edema": 1}}
MODEL = {"model": "m", "model_notice": None, "reasoning": "heart is big", "findings": "f", "impression": "imp",
         "report_labels": ["Cardiomegaly"], "boxes": [{"label": "heart", "xyxy": [1, 2, 3, 4],
                                                       "xyxy_norm": [0, 0, 0.1, 0.1], "score": None}],
         "image_size": [32, 32], "probabilities": {"Cardiomegaly": 0.9, "Edema": 0.2}}
# What a reader calls under each condition, how long it takes (active seconds) and how sure they are.
CALLS = {"manual": ["Cardiomegaly", "Fracture"], "labels": None, "reasoning": ["Cardiomegaly", "Edema"]}
SECONDS = {"manual": 60, "labels": 40, "reasoning": 30}
CONFIDENCE = {"manual": 3, "labels": 4, "reasoning": 5}


class Clock:
    def __init__(self):
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self):
        return self.now

    def tick(self, seconds):
        self.now += timedelta(seconds=seconds)


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (32, 32), 100).save(buffer, format="PNG")
    return buffer.getvalue()


def _reference(case):
    return {name: TRUTH[case].get(name) for name in CHEXPERT14}


def make_study(tmp_path, conditions=READER_CONDITIONS, mode="reader", readers=3):
    clock = Clock()
    store = StudyStore(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path, clock=clock)
    cases = [CaseInput(c, [_png()], _reference(c), MODEL) for c in TRUTH]
    design = make_design(readers, list(TRUTH), conditions, seed=3)
    study_id, keys = store.create_study(name="synthetic", mode=mode, conditions=conditions, seed=3,
                                        model={"name": "m"}, cases=cases, design=design)
    return store, clock, study_id, keys


def read_all(store, clock, keys):
    """Every reader reads every case; R01 pauses 1000 s in the middle of their first case (not counted)."""
    for name, key in keys.items():
        reader = store.verify_reader(key)
        while (position := store.next_case(reader.id)) is not None:
            condition = store.case_payload(reader.id, position)["condition"]
            store.mark_viewed(reader.id, position)
            clock.tick(SECONDS[condition] / 2)
            if name == "R01" and position == 1:
                store.pause(reader.id, position)
                clock.tick(1000)
                store.resume(reader.id, position)
            clock.tick(SECONDS[condition] / 2)
            case = next(r["case"] for r in store.assignment_table(reader.study_id)
                        if r["reader"] == name and r["position"] == position)
            calls = CALLS[condition] or [n for n, v in TRUTH[case].items() if v]
            response = {"findings": calls, "impression": f"read {case}", "confidence": CONFIDENCE[condition]}
            if condition != "manual":
                response |= {"quality": 4, "usefulness": 5 if condition == "reasoning" else 3, "time_saved": 2,
                             "safety": 5}
            store.submit(reader.id, position, response)


def test_results_equal_the_hand_computation(tmp_path):
    store, clock, study_id, keys = make_study(tmp_path)
    read_all(store, clock, keys)
    rows = store.responses(study_id)
    assert len(rows) == 9 and {r["active_seconds"] for r in rows if r["condition"] == "manual"} == {60.0}
    results = compute(rows, list(READER_CONDITIONS), seed=0, n_resamples=300, cases=store.cases(study_id))
    manual, labels, reasoning = (results["conditions"][c] for c in READER_CONDITIONS)
    # manual calls Cardiomegaly on c1, c2, c3 (truth 1, 0, 1): tp 2, fp 1; Edema never (truth 0, 1, 1): fn 2, tn 1.
    # Fracture is called but never labelled: not scored.
    assert manual["per_label"]["Cardiomegaly"] | {} == {"sensitivity": 1.0, "specificity": 0.0, "f1": 0.8,
                                                        "tp": 2, "fp": 1, "fn": 0, "tn": 0}
    assert manual["per_label"]["Edema"]["sensitivity"] == 0.0 and manual["per_label"]["Edema"]["specificity"] == 1.0
    assert manual["per_label"]["Fracture"]["f1"] is None
    assert (manual["micro_sensitivity"], manual["micro_specificity"]) == (0.5, 0.5)
    assert manual["micro_f1"] == pytest.approx(4 / 7)
    assert (manual["macro_sensitivity"], manual["macro_specificity"], manual["macro_f1"]) == (0.5, 0.5, 0.4)
    # labels: every call right.
    assert (labels["micro_sensitivity"], labels["micro_specificity"], labels["micro_f1"]) == (1.0, 1.0, 1.0)
    # reasoning calls both everywhere: tp 4, fp 2, fn 0, tn 0.
    assert (reasoning["micro_sensitivity"], reasoning["micro_specificity"]) == (1.0, 0.0)
    assert reasoning["micro_f1"] == pytest.approx(0.8)
    assert [results["conditions"][c]["seconds_per_case"] for c in READER_CONDITIONS] == [60.0, 40.0, 30.0]
    assert [results["conditions"][c]["confidence"] for c in READER_CONDITIONS] == [3.0, 4.0, 5.0]
    assert manual["usefulness"] is None and labels["usefulness"] == 3.0 and reasoning["usefulness"] == 5.0
    assert manual["responses"] == 3 and manual["readers"] == 3 and manual["cases"] == 3

    by = {(c["a"], c["b"], c["metric"]): c for c in results["comparisons"]}
    assert by[("manual", "labels", "micro_f1")]["difference"] == pytest.approx(1 - 4 / 7)
    assert by[("labels", "reasoning", "micro_specificity")]["difference"] == -1.0
    # Every labels read takes 40 s and every manual one 60 s: each resample's difference is -20 exactly.
    seconds = by[("manual", "labels", "seconds_per_case")]
    assert (seconds["difference"], seconds["ci_low"], seconds["ci_high"]) == (-20.0, -20.0, -20.0)
    assert seconds["p_value"] == pytest.approx(1 / (seconds["n_valid"] + 1))
    f1 = by[("manual", "labels", "micro_f1")]
    assert f1["ci_low"] <= f1["difference"] <= f1["ci_high"] and f1["ci_low"] < f1["ci_high"]
    # The model alone calls Cardiomegaly (0.9) everywhere and Edema (0.2) nowhere: the manual figures again.
    model = results["model_alone"]
    assert (model["cases"], model["micro_sensitivity"], model["micro_specificity"]) == (3, 0.5, 0.5)
    assert model["micro_f1"] == pytest.approx(4 / 7) and model["per_label"]["Cardiomegaly"]["fp"] == 1
    again = compute(rows, list(READER_CONDITIONS), seed=0, n_resamples=300, cases=store.cases(study_id))
    assert again == results  # seeded
    assert "two-way bootstrap over readers and cases" in results["method"]


def test_results_files(tmp_path):
    store, clock, study_id, keys = make_study(tmp_path)
    read_all(store, clock, keys)
    out = tmp_path / "out"
    write_results(store.study(study_id), store.responses(study_id), out, n_resamples=200,
                  cases=store.cases(study_id))
    with (out / "responses.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9
    first = next(r for r in rows if r["reader"] == "R01" and r["position"] == "1")
    assert first["active_seconds"] == str(float(SECONDS[first["condition"]]))  # the 1000 s pause is left out
    assert rows[0]["reference:Cardiomegaly"] in ("0", "1") and rows[0]["reference:Fracture"] == ""
    report = (out / "report.html").read_text()
    assert "Research and education use only" in report and "data:image/png;base64" in report
    assert "Paired comparisons" in report and "The model alone (3 cases" in report
    assert json.loads((out / "results.json").read_text())["study"]["seed"] == 3


def test_each_condition_shows_only_what_it_allows(tmp_path):
    store, clock, study_id, keys = make_study(tmp_path)
    reader = store.verify_reader(keys["R02"])
    assert store.verify_reader(keys["R02"][:-2] + "xx") is None and store.verify_reader("cxrlm-1-2") is None
    seen = {}
    for row in store.assignments(reader.id):
        payload = store.case_payload(reader.id, row["position"])
        seen[payload["condition"]] = payload["ai"]
        assert "case" not in payload and "c1" not in json.dumps(payload)  # readers see positions only
        store.mark_viewed(reader.id, row["position"])
        extra = {} if row["condition"] == "manual" else {"quality": 3, "usefulness": 3, "time_saved": 3, "safety": 3}
        store.submit(reader.id, row["position"], {"findings": [], "confidence": 2} | extra)
    assert seen["manual"] is None
    assert set(seen["labels"]) == {"model", "model_notice", "labels"}
    assert seen["labels"]["labels"][2] == {"name": "Cardiomegaly", "probability": 0.9, "present": True}
    assert seen["reasoning"]["reasoning"] == "heart is big" and seen["reasoning"]["boxes"][0]["label"] == "heart"
    assert store.case_image(reader.id, 1).read_bytes() == _png() and store.case_image(reader.id, 1, 5) is None


def test_order_time_and_validation(tmp_path):
    store, clock, study_id, keys = make_study(tmp_path)
    reader = store.verify_reader(keys["R01"])
    with pytest.raises(StudyConflict, match="read case 1 first"):
        store.case_payload(reader.id, 2)
    with pytest.raises(InputError, match="positions run 1 to 3"):
        store.case_payload(reader.id, 9)
    with pytest.raises(StudyConflict, match="never viewed"):
        store.submit(reader.id, 1, {"confidence": 3})
    store.mark_viewed(reader.id, 1)
    clock.tick(10)
    store.pause(reader.id, 1)
    store.pause(reader.id, 1)  # a second pause changes nothing
    clock.tick(500)
    assert store.assignments(reader.id)[0] | {} == {"position": 1, "condition": store.assignments(reader.id)[0][
        "condition"], "status": "paused", "seconds": 10.0}
    store.mark_viewed(reader.id, 1)  # coming back to a paused case resumes it
    clock.tick(5)
    condition = store.case_payload(reader.id, 1)["condition"]
    bad = [({"confidence": 6}, "confidence must be"), ({"confidence": 3, "findings": ["Heart"]}, "unknown finding"),
           ({"confidence": 3, "impression": "x" * 4001}, "at most 4,000"), ({"confidence": 3, "mood": 1}, "unknown"),
           ({"confidence": True}, "confidence must be")]
    bad.append(({"confidence": 3, "usefulness": 3}, "does not show") if condition == "manual"
               else ({"confidence": 3}, "required here"))
    for response, message in bad:
        with pytest.raises(InputError, match=message):
            store.submit(reader.id, 1, response)
    good = {"confidence": 3, "findings": {"Edema": True, "Fracture": False}}
    if condition != "manual":
        good |= {"quality": 1, "usefulness": 2, "time_saved": 3, "safety": 4}
    assert store.submit(reader.id, 1, good) == {"done": 1, "total": 3, "next": 2}
    with pytest.raises(StudyConflict, match="already submitted"):
        store.submit(reader.id, 1, good)
    response = store.case_payload(reader.id, 1)["response"]
    assert response["active_seconds"] == 15.0 and response["findings"]["Edema"] is True
    assert response["findings"]["Fracture"] is False
    with pytest.raises(StudyConflict, match="only a teaching study"):
        store.reveal(reader.id, 1)


def test_teaching_reveal_after_submit_with_agreement_and_running_score(tmp_path):
    store, clock, study_id, keys = make_study(tmp_path, conditions=("teaching",), mode="teaching", readers=1)
    reader = store.verify_reader(keys["R01"])
    assert reader.mode == "teaching"
    first = store.case_payload(reader.id, 1)
    assert first["ai"] is None
    store.mark_viewed(reader.id, 1)
    with pytest.raises(StudyConflict, match="submit your read"):
        store.reveal(reader.id, 1)
    store.submit(reader.id, 1, {"findings": ["Cardiomegaly", "Edema"], "confidence": 4})
    case = store.assignment_table(study_id)[0]["case"]
    revealed = store.reveal(reader.id, 1)
    # The model calls Cardiomegaly (0.9) and not Edema (0.2); the resident calls both.
    truth = TRUTH[case]
    rows = {r["label"]: r for r in revealed["agreement"]["labels"]}
    assert rows["Cardiomegaly"] == {"label": "Cardiomegaly", "resident": True, "model": True,
                                    "truth": bool(truth["Cardiomegaly"]),
                                    "resident_vs_truth": bool(truth["Cardiomegaly"]),
                                    "model_vs_truth": bool(truth["Cardiomegaly"]), "resident_vs_model": True}
    assert rows["Edema"]["resident_vs_model"] is False and rows["Fracture"]["truth"] is None
    resident_right = (truth["Cardiomegaly"] == 1) + (truth["Edema"] == 1)
    model_right = (truth["Cardiomegaly"] == 1) + (truth["Edema"] == 0)
    assert revealed["score"] == {"cases": 1, "labels_scored": 2, "resident_correct": resident_right,
                                 "model_correct": model_right, "resident_accuracy": resident_right / 2,
                                 "model_accuracy": model_right / 2}
    assert revealed["model"]["reasoning"] == "heart is big" and revealed["n_images"] == 1
    assert str(tmp_path) not in json.dumps(revealed)  # no server path goes to the browser
    store.mark_viewed(reader.id, 2)
    store.submit(reader.id, 2, {"findings": [], "confidence": 2})
    assert store.reveal(reader.id, 2)["score"]["cases"] == 2

    from cxrlm.study.teaching import teaching_file

    pages = teaching_file(store.teaching_entries(reader.id), tmp_path / "teach")
    assert len(pages) == 2 and "heart is big" in pages[0].read_text() and "base64" in pages[0].read_text()
