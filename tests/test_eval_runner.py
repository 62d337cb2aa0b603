"""The eval runner end to end with fake models: outputs, values, resume, determinism, compare, bad inputs."""

import json

import pytest
from _eval_fixtures import BatchingDimModel, DimModel, OracleModel, make_dataset

from cxrlm.errors import ConfigError, InputError
from cxrlm.eval.runner import EvalConfig, compare_runs, read_rows, run_eval

FAST = {"n_resamples": 50, "progress": False, "min_positives": 1}  # 6 items: rank every label with a positive


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def oracle_run(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle")
    return out, run_eval(OracleModel(manifest), EvalConfig(manifest, out, **FAST))


def test_run_folder_holds_every_output(oracle_run):
    out, _ = oracle_run
    for name in ("predictions.jsonl", "metrics.json", "report.md", "report.html", "run.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert set(saved["tasks"]) == {"report", "classify", "ground"}
    for task in saved["tasks"].values():
        for entry in task.values():
            assert {"value", "ci_low", "ci_high", "n"} <= set(entry)
    assert saved["run"]["model"] == "oracle" and saved["run"]["prompt_template_version"] == "test/1"
    assert saved["run"]["versions"]["numpy"] and saved["run"]["n_items"] == {"report": 6, "classify": 6, "ground": 4}
    assert "Research and education use only" in (out / "report.md").read_text()


def test_oracle_scores_perfectly_and_beats_every_baseline(oracle_run):
    _, metrics = oracle_run
    tasks = metrics["tasks"]
    assert tasks["report"]["bleu4"]["value"] == pytest.approx(1.0)
    assert tasks["report"]["rouge_l"]["value"] == pytest.approx(1.0)
    assert tasks["report"]["ce_f1_micro_14"]["value"] == 1.0
    assert tasks["classify"]["macro_auroc"]["value"] == 1.0 and tasks["classify"]["macro_f1"]["value"] == 1.0
    assert tasks["ground"]["mean_iou"]["value"] == 1.0 and tasks["ground"]["map50"]["value"] == pytest.approx(1.0)
    assert set(metrics["baselines"]) == {"constant-normal", "label-prior", "nearest-neighbour", "mean-box"}
    # the label prior is constant per label, so its AUROC is exactly 0.5 wherever defined
    assert metrics["baselines"]["label-prior"]["classify"]["macro_auroc"]["value"] == 0.5
    vs = metrics["vs_baselines"]
    assert vs["classify"]["label-prior"]["macro_auroc"]["a_better"]
    assert vs["ground"]["mean-box"]["mean_iou"]["delta"] > 0
    assert vs["report"]["constant-normal"]["ce_f1_micro_14"]["delta"] > 0


def test_unlabelled_labels_are_skipped(oracle_run):
    _, metrics = oracle_run
    per_label = metrics["per_label"]["model"]["classify"]["per_label"]
    assert per_label["Support Devices"]["n"] == 0 and per_label["Support Devices"]["auroc"] is None
    assert per_label["Cardiomegaly"]["n"] == 6 and per_label["Cardiomegaly"]["n_positive"] == 2


def test_resume_after_interrupt_skips_done_items(manifest, tmp_path):
    config = EvalConfig(manifest, tmp_path, baselines=False, **FAST)
    with pytest.raises(KeyboardInterrupt):
        run_eval(OracleModel(manifest, crash_after=7), config)
    assert len(read_rows(tmp_path / "predictions.jsonl")) == 7  # every finished item was flushed
    with (tmp_path / "predictions.jsonl").open("a") as f:
        f.write('{"key": "model|report|torn')  # a crash in the middle of a write
    model = OracleModel(manifest)
    metrics = run_eval(model, config)
    assert model.calls == 16 - 7
    rows = read_rows(tmp_path / "predictions.jsonl")
    assert len(rows) == 16 and len({r["key"] for r in rows}) == 16
    assert metrics["tasks"]["classify"]["macro_auroc"]["value"] == 1.0
    again = OracleModel(manifest)
    run_eval(again, config)
    assert again.calls == 0


def test_rerun_with_other_settings_is_refused(manifest, tmp_path):
    run_eval(DimModel(), EvalConfig(manifest, tmp_path, tasks=("classify",), baselines=False, **FAST))
    with pytest.raises(InputError, match="seed differ"):
        run_eval(DimModel(), EvalConfig(manifest, tmp_path, tasks=("classify",), seed=1, baselines=False, **FAST))


def test_a_run_folder_from_before_expected_value_boxes_is_refused(manifest, tmp_path):
    config = EvalConfig(manifest, tmp_path, tasks=("classify",), baselines=False, **FAST)
    run_eval(DimModel(), config)
    settings = json.loads((tmp_path / "run.json").read_text())
    del settings["decoding"]  # what cxrlm wrote while it decoded box digits greedily
    (tmp_path / "run.json").write_text(json.dumps(settings))
    with pytest.raises(InputError, match="decoding differ"):
        run_eval(DimModel(), config)


@pytest.fixture(scope="module")
def dim_run(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("dim")
    return out, run_eval(DimModel(), EvalConfig(manifest, out, **FAST))


def test_deterministic_across_runs(manifest, dim_run, tmp_path):
    again = run_eval(DimModel(), EvalConfig(manifest, tmp_path, tasks=("classify",), **FAST))
    first = dim_run[1]
    assert again["tasks"]["classify"] == first["tasks"]["classify"]
    assert again["vs_baselines"]["classify"] == first["vs_baselines"]["classify"]
    for name in ("label-prior", "nearest-neighbour", "constant-normal"):
        assert again["baselines"][name]["classify"] == first["baselines"][name]["classify"]


def test_weak_model_values_and_label_fallback(dim_run):
    out, metrics = dim_run
    rows = [r for r in read_rows(out / "predictions.jsonl") if r["system"] == "model" and r["task"] == "classify"]
    # a label named without a probability counts 1, any other 0
    assert {v for r in rows for v in r["prediction"]["probabilities"].values()} <= {0.0, 1.0}
    ground = metrics["tasks"]["ground"]
    assert 0 < ground["mean_iou"]["value"] < 1
    assert ground["mean_iou"]["ci_low"] <= ground["mean_iou"]["value"] <= ground["mean_iou"]["ci_high"]


def test_label_scores_that_follow_one_number_per_image_get_a_note():
    import numpy as np

    from cxrlm.eval.scoring import score_task
    from cxrlm.pathologies import CLASSIFY_LABELS

    rng = np.random.default_rng(0)

    def rows(scores):
        return [{"reference": {"labels": {name: int(rng.random() < 0.3) for name in CLASSIFY_LABELS}},
                 "prediction": {"probabilities": dict(zip(CLASSIFY_LABELS, row))}} for row in scores]

    abnormal = rng.random((40, 1))
    one = score_task("classify", rows(0.2 + 0.5 * abnormal + 0.1 * rng.random((40, 22))), n_resamples=20)
    assert one.metrics["first_component_share"]["value"] > 0.9 and "one component" in " ".join(one.notes)
    apart = score_task("classify", rows(rng.random((40, 22))), n_resamples=20)
    assert apart.metrics["first_component_share"]["value"] < 0.3 and not apart.notes


def test_batching_model_gets_chunks(manifest, tmp_path):
    model = BatchingDimModel()
    run_eval(model, EvalConfig(manifest, tmp_path, tasks=("classify",), batch_size=4, baselines=False, **FAST))
    assert model.batches == [4, 2]


def test_limit_takes_a_seeded_subset(manifest, tmp_path):
    a = run_eval(
        DimModel(), EvalConfig(manifest, tmp_path / "a", tasks=("classify",), limit=3, baselines=False, **FAST)
    )
    assert a["run"]["n_records"] == 3


def test_compare_runs(oracle_run, dim_run):
    result = compare_runs(oracle_run[0], dim_run[0], n_resamples=50)
    assert result["tasks"]["classify"]["n_shared"] == 6
    assert result["tasks"]["classify"]["metrics"]["macro_auroc"]["delta"] > 0
    same = compare_runs(oracle_run[0], oracle_run[0], n_resamples=50)
    assert same["tasks"]["report"]["metrics"]["bleu4"]["delta"] == 0.0
    assert same["tasks"]["report"]["metrics"]["bleu4"]["p_value"] == 1.0


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"split": "val"}, InputError, "no records with images in split 'val'"),
        ({"tasks": ("caption",)}, ConfigError, "unknown task"),
        ({"limit": 0}, ConfigError, "limit must be at least 1"),
    ],
)
def test_bad_settings(manifest, tmp_path, change, error, match):
    with pytest.raises(error, match=match):
        run_eval(DimModel(), EvalConfig(manifest, tmp_path, **{**FAST, **change}))


def test_bad_manifest_and_missing_image(manifest, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(InputError, match="line 1"):
        run_eval(DimModel(), EvalConfig(broken, tmp_path / "o1", **FAST))
    moved = tmp_path / "moved.jsonl"
    moved.write_text(manifest.read_text())  # relative image paths now point to nothing
    with pytest.raises(InputError, match="does not exist"):
        run_eval(DimModel(), EvalConfig(moved, tmp_path / "o2", **FAST))
    with pytest.raises(InputError, match="not an eval run folder"):
        compare_runs(tmp_path, tmp_path)


def test_cli_eval_and_compare(manifest, oracle_run, tmp_path, monkeypatch, capsys):
    import cxrlm.models
    from cxrlm import cli

    monkeypatch.setattr(cli, "VERB_MODULES", (cli.eval,))
    monkeypatch.setattr(cxrlm.models, "load_model", lambda path, **options: DimModel())
    code = cli.main(
        [
            "eval",
            "--manifest",
            str(manifest),
            "--out",
            str(tmp_path / "run"),
            "--tasks",
            "classify",
            "--resamples",
            "50",
            "--quiet",
            "--no-baselines",
        ]
    )
    assert code == 0 and "classify: macro_auroc" in capsys.readouterr().out
    assert cli.main(["eval", "compare", str(oracle_run[0]), str(tmp_path / "run"), "--resamples", "50"]) == 0
    assert "| macro_auroc |" in capsys.readouterr().out
    assert cli.main(["eval", "--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: manifest")
    assert cli.main(["eval"]) == 2
    assert "needs --manifest" in capsys.readouterr().err


def test_baselines_never_train_on_evaluated_images(manifest, tmp_path):
    # --split all evaluates the train records too: the baselines must drop them, or nearest-neighbour finds itself.
    metrics = run_eval(OracleModel(manifest), EvalConfig(manifest, tmp_path, split=None, **FAST))
    assert any("left out of the baselines" in note for note in metrics["notes"])
