"""Calibration: the metrics (ECE, Brier) against hand computation and scikit-learn, the per-label fit, the file,
`cxrlm calibrate` end to end on a tiny checkpoint, and what `cxrlm eval` reports (ECE before and after, dropped
tasks, labels with too few positives)."""

import json
import math
import shutil

import jsonschema
import numpy as np
import pytest
from _eval_fixtures import DimModel, make_dataset

from cxrlm.errors import ModelLoadError
from cxrlm.metrics import calibration as metrics
from cxrlm.models import calibration
from cxrlm.types import output_schema

# ---------------------------------------------------------------- metrics


def test_ece_by_hand():
    # bins of width 0.1: {0.05, 0.05} -> bin 0 (mean 0.05, 1 of 2 positive), {0.95, 1.0} -> bin 9 (mean 0.975, 2 of 2)
    truth = [1, 0, 1, 1]
    prob = [0.05, 0.05, 0.95, 1.0]
    expected = 2 / 4 * abs(0.5 - 0.05) + 2 / 4 * abs(1.0 - 0.975)
    assert metrics.ece(truth, prob) == pytest.approx(expected)
    bins = metrics.reliability_bins(truth, prob)
    assert bins["count"].tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 falls in the last bin
    assert metrics.ece([1, 0], [1.0, 0.0]) == 0.0  # a perfect forecaster
    assert metrics.ece(truth, prob, n_bins=1) == pytest.approx(abs(3 / 4 - np.mean(prob)))


def test_brier_matches_scikit_learn_and_skips_unlabelled():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(0)
    truth, prob = rng.integers(0, 2, 200), rng.random(200)
    assert metrics.brier(truth, prob) == pytest.approx(brier_score_loss(truth, prob))
    with_unlabelled = np.r_[truth, np.nan, -1].astype(float)
    assert metrics.brier(with_unlabelled, np.r_[prob, 0.9, 0.9]) == pytest.approx(brier_score_loss(truth, prob))
    assert metrics.ece(with_unlabelled, np.r_[prob, 0.9, 0.9]) == pytest.approx(metrics.ece(truth, prob))
    assert math.isnan(metrics.brier([np.nan], [0.5])) and math.isnan(metrics.ece([], []))


# ---------------------------------------------------------------- fitting and the file


def _overconfident(n=20000, temperature=2.5, seed=0):
    """Truth drawn from sigmoid(z); the model reports sigmoid(z * T), too sure by a factor T in log-odds."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    truth = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return truth, 1 / (1 + np.exp(-z * temperature))


def test_temperature_fit_recovers_a_known_temperature_and_lowers_ece():
    truth, prob = _overconfident()
    fitted = calibration.fit(truth[:, None], prob[:, None], ["Edema"], "temperature")
    assert fitted.labels["Edema"]["temperature"] == pytest.approx(2.5, rel=0.05)
    after = np.array([fitted.apply_one("Edema", p) for p in prob])
    assert metrics.ece(truth, after) < 0.02 < metrics.ece(truth, prob)
    platt = calibration.fit(truth[:, None], prob[:, None], ["Edema"], "platt")
    assert platt.labels["Edema"]["a"] == pytest.approx(1 / 2.5, rel=0.05)
    assert platt.labels["Edema"]["b"] == pytest.approx(0.0, abs=0.05)


def test_labels_with_too_few_positives_are_not_fitted(tmp_path):
    truth = np.array([[1, 0], [0, 0], [1, 0], [0, 1]] * 5, dtype=float)  # 10 positives, then 5
    prob = np.full(truth.shape, 0.3)
    fitted = calibration.fit(truth, prob, ["Edema", "Hernia"], min_positives=10)
    assert fitted.labels["Edema"]["fitted"] and not fitted.labels["Hernia"]["fitted"]
    assert fitted.labels["Hernia"]["reason"].startswith("too few positives: n=5")
    assert fitted.apply({"Hernia": 0.3, "Mass": 0.7}) == {"Hernia": 0.3, "Mass": 0.7}  # identity, and unknown names
    calibration.save(fitted, tmp_path / "c.json")
    again = calibration.load(tmp_path / "c.json")
    assert again.labels == fitted.labels and again.source == str(tmp_path / "c.json")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other", "method": "temperature", "labels": {}}', "is not a cxrlm-calibration/1 file"),
        (('{"format": "cxrlm-calibration/1", "method": "temperature", "labels": {"Edema": {"fitted": true, '
          '"temperature": -1}}}'), "temperature > 0"),
    ],
)
def test_a_bad_calibration_file_is_a_one_line_error(tmp_path, text, match):
    path = tmp_path / "calibration.json"
    path.write_text(text)
    with pytest.raises(ModelLoadError, match=match):
        calibration.load(path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        calibration.find(None, str(tmp_path / "missing.json"))
    assert calibration.find(tmp_path, "none") is None  # "none": raw probabilities, whatever the folder holds


# ---------------------------------------------------------------- the CLI on a tiny checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def model_dir(tiny_checkpoint, tmp_path):
    """A copy of the session's tiny checkpoint: calibrate writes into the folder it is given."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "model")


def _classify(main, capsys, image, model_dir, *extra):
    assert main(["classify", str(image), "--model", str(model_dir), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_calibrate_writes_next_to_the_model_and_classify_uses_it(dataset, model_dir, capsys):
    from cxrlm.cli import main

    image = dataset.parent / "images" / "img006.png"
    before = _classify(main, capsys, image, model_dir)
    assert before["calibration"] is None
    code = main(["calibrate", "--model", str(model_dir), "--manifest", str(dataset), "--split", "test",
                 "--min-positives", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and f"wrote {model_dir / 'calibration.json'}" in printed
    saved = json.loads((model_dir / "calibration.json").read_text())
    assert saved["fitted_on"]["split"] == "test" and saved["fitted_on"]["n_items"] == 6
    assert len(saved["fitted_on"]["manifest_sha256"]) == 64 and saved["method"] == "temperature"
    assert saved["labels"]["Cardiomegaly"]["fitted"] and saved["labels"]["Cardiomegaly"]["n_positive"] == 2
    assert not saved["labels"]["Fracture"]["fitted"]

    after = _classify(main, capsys, image, model_dir)
    jsonschema.validate(after, output_schema())
    assert after["calibration"]["method"] == "temperature"
    assert after["calibration"]["raw_probabilities"] == before["probabilities"]
    assert after["probabilities"]["Cardiomegaly"] != before["probabilities"]["Cardiomegaly"]
    assert after["probabilities"]["Fracture"] == before["probabilities"]["Fracture"]  # not fitted: as it was
    raw = _classify(main, capsys, image, model_dir, "--calibration", "none")
    assert raw["probabilities"] == before["probabilities"] and raw["calibration"] is None

    assert main(["classify", str(image), "--model", str(model_dir)]) == 0
    assert "probabilities: calibrated (temperature, synthetic test)" in capsys.readouterr().out
    assert main(["classify", str(image), "--model", str(model_dir), "--calibration", "none"]) == 0
    assert "uncalibrated: raw yes-token likelihoods" in capsys.readouterr().out

    # eval of the calibrated model reports calibration error before and after, with intervals
    assert main(["eval", "--model", str(model_dir), "--manifest", str(dataset), "--tasks", "classify", "--out",
                 str(model_dir.parent / "run"), "--no-baselines", "--resamples", "20", "--quiet",
                 "--min-positives", "2"]) == 0
    summary = capsys.readouterr().out
    assert "ece_uncalibrated" in summary and "brier " in summary
    run = json.loads((model_dir.parent / "run" / "metrics.json").read_text())
    for key in ("ece", "ece_uncalibrated", "brier", "brier_uncalibrated"):
        entry = run["tasks"]["classify"][key]  # ECE's percentile interval may sit above it: binning is biased
        assert 0 <= entry["value"] <= 1 and 0 <= entry["ci_low"] <= entry["ci_high"] <= 1 and entry["n"] == 6, key
    tasks = run["tasks"]["classify"]
    assert tasks["ece_change"]["value"] == pytest.approx(tasks["ece"]["value"] - tasks["ece_uncalibrated"]["value"])
    assert tasks["brier_change"]["ci_low"] <= tasks["brier_change"]["ci_high"]
    assert run["run"]["calibration"].startswith("temperature, synthetic test (")
    assert "ECE uncalibrated" in (model_dir.parent / "run" / "report.md").read_text()
    assert (model_dir.parent / "run" / "report.html").read_text().count("alt='classify plot'") == 3  # + reliability


def test_calibrate_bad_inputs_are_one_line_errors(dataset, model_dir, tmp_path, capsys):
    from cxrlm.cli import main

    assert main(["calibrate", "--model", str(tmp_path / "nope"), "--manifest", str(dataset), "--split", "test",
                 "--out", str(tmp_path / "c.json")]) == 2
    assert capsys.readouterr().err.startswith("error: model folder")
    no_positives = tmp_path / "none.jsonl"
    records = [json.loads(line) for line in dataset.read_text().splitlines()]
    for record in records:
        record["labels"] = {name: 0 for name in record["labels"]}
        record["image"] = str(dataset.parent / record["image"])
    no_positives.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["calibrate", "--model", str(model_dir), "--manifest", str(no_positives), "--split", "test",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no label has 10 positives") and err.count("\n") == 1
    assert not (model_dir / "calibration.json").exists()
    assert main(["calibrate", "--model", str(model_dir), "--manifest", str(dataset), "--split", "val"]) == 2
    assert "no record of split 'val'" in capsys.readouterr().err
    (model_dir / "calibration.json").write_text("{broken")
    assert main(["classify", str(dataset.parent / "images" / "img000.png"), "--model", str(model_dir)]) == 2
    assert "calibration.json is not valid JSON" in capsys.readouterr().err


# ---------------------------------------------------------------- eval: dropped tasks and few positives


def test_eval_summary_names_dropped_tasks_and_marks_labels_with_few_positives(dataset, tmp_path, monkeypatch,
                                                                                capsys):
    import cxrlm.models
    from cxrlm import cli

    no_reports = tmp_path / "no-reports.jsonl"
    records = [json.loads(line) for line in dataset.read_text().splitlines()]
    for record in records:
        record["report"] = None
        record["image"] = str(dataset.parent / record["image"])
    no_reports.write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(cxrlm.models, "load_model", lambda path, **options: DimModel())
    assert cli.main(["eval", "--manifest", str(no_reports), "--out", str(tmp_path / "run"), "--tasks",
                     "classify,report", "--resamples", "20", "--quiet", "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "report: dropped, no item of the split has what this task is scored on (a reference report)" in out
    assert "Cardiomegaly (n=2)" in out and "not ranked" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["dropped_tasks"]) == {"report"}
    cardio = metrics["per_label"]["model"]["classify"]["per_label"]["Cardiomegaly"]
    assert cardio["ranked"] is False and cardio["caveat"] == "too few positives: n=2"
    assert metrics["tasks"]["classify"]["macro_auroc"]["value"] is None  # no label has 10 positives here
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| Cardiomegaly | n/a (too few positives: n=2) |" in report
