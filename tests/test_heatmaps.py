"""Heatmaps (cxrlm.heatmaps, HFEngine.saliency, cxrlm eval heatmaps) and box scores with their warnings."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from scripted_engine import ScriptedEngine

from cxrlm import heatmaps
from cxrlm.engines import numbers
from cxrlm.engines.base import Generation
from cxrlm.models import DEFAULT_MODEL_DIR, load_model
from cxrlm.models.base import CxrModel
from cxrlm.models.families import FAMILIES
from cxrlm.models.profiles import PROFILES, resolve_profile
from cxrlm.types import Study, Task, XrayImage

FAMILIES_WITH_IMAGES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision", "gemma3")


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("heatmap-families")
    folders = {name: FAMILIES[name].build_tiny(root / f"tiny-{name}") for name in FAMILIES_WITH_IMAGES}
    (folders["qwen3_vl"] / "cxrlm.json").write_text(json.dumps({"min_pixels": 64 * 64, "max_pixels": 128 * 128}))
    return {name: load_model(folder, device="cpu") for name, folder in folders.items()}


@pytest.fixture(scope="module")
def shipped():
    return load_model(DEFAULT_MODEL_DIR, device="cpu")


@pytest.mark.parametrize("family", FAMILIES_WITH_IMAGES)
def test_every_family_maps_back_to_the_original_image(family_models, xray, family):
    model = family_models[family]
    study = Study(images=[xray])
    cases = ((Task.CLASSIFY, "Cardiomegaly", None), (Task.GROUND, "right lung", "[10, 20, 40, 80]"))
    for task, subject, answer in cases:
        heat = model.heatmap(study, task, subject, answer)
        assert heat.shape == (300, 240)  # (height, width) of the original image, whatever the model saw
        assert heat.min() >= 0 and heat.sum() == pytest.approx(1.0, abs=1e-3)
        assert heat.std() > 0  # the target really depends on the image


def test_qwen_patches_are_laid_out_where_the_processor_took_them():
    """Each patch of a grid-sized image gets its own intensity; the un-flattened map must rank them in place."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(DEFAULT_MODEL_DIR, local_files_only=True)
    image_processor = processor.image_processor
    patch, merge = image_processor.patch_size, image_processor.merge_size
    rows, cols = 4, 6
    values = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) * 10 + 5
    pixels = np.kron(values, np.ones((patch, patch))).astype(np.uint8)
    inputs = processor.image_processor(images=[Image.fromarray(pixels).convert("RGB")], return_tensors="np")
    assert [int(v) for v in inputs["image_grid_thw"][0]] == [1, rows, cols]
    x = np.asarray(inputs["pixel_values"], dtype=np.float64) + 10  # all positive, ordered like the intensities
    scores = heatmaps.patch_scores(np.ones_like(x), x, inputs["image_grid_thw"], merge, patch, "gradxinput")
    assert scores.shape == (rows, cols)
    assert (np.argsort(scores.ravel()) == np.arange(rows * cols)).all()


def test_mass_area_and_rank_correlation():
    heat = np.zeros((10, 20), np.float32)
    heat[2:4, 5:10] = 1
    assert heatmaps.mass_inside(heat, (5, 2, 10, 4)) == 1.0 and heatmaps.mass_inside(heat, (0, 0, 5, 10)) == 0.0
    assert heatmaps.area_fraction((20, 10), (0, 0, 10, 5)) == 0.25
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    assert heatmaps.rank_correlation(a, a) == pytest.approx(1.0)
    assert heatmaps.rank_correlation(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="unknown heatmap method"):
        heatmaps.patch_scores(a, a, None, 1, 1, "smoothgrad")


def test_randomized_weights_give_different_maps(shipped, xray):
    """The model-randomization test (Adebayo et al., 2018) on cxrlm-tiny: a trained map is reproduced exactly,
    and a fully randomized model's map of the same label is a different one."""
    from cxrlm.eval.heatmaps import randomization_test

    second = XrayImage(pixels=np.flipud(xray.pixels).copy(), source="flipped.png")
    result = randomization_test(shipped, [Study(images=[xray]), Study(images=[second])])
    rho = result["spearman"]
    assert rho["trained_again"]["mean"] == pytest.approx(1.0)
    assert rho["all weights"]["mean"] < rho["trained_again"]["mean"] - 0.2
    assert set(rho) == {"trained_again", "another_image", "language model", "all weights"}


def test_box_mass_against_a_uniform_map(shipped, xray):
    from cxrlm.eval.heatmaps import BoxItem, box_mass

    result = box_mass(shipped, [BoxItem(Study(images=[xray]), "Effusion", (0, 0, 120, 150))])
    row = result["per_box"][0]
    assert row["label"] == "Effusion" and row["area"] == pytest.approx(0.25) and 0 < row["mass"] < 1
    assert result["per_finding"]["Effusion"]["boxes"] == 1


# --- box scores


def belief(center: int, spread: int) -> dict[int, float]:
    values = range(center - spread, center + spread + 1)
    return {v: 1 / len(values) for v in values}


def test_confidence_is_high_for_a_peaked_belief_and_low_for_a_flat_one():
    peaked, flat = {50: 0.9, 51: 0.05, 49: 0.05}, belief(50, 40)
    assert numbers.confidence(peaked, 5) == pytest.approx(1.0)
    assert 0 <= numbers.confidence(flat, 5) < 0.2
    assert numbers.confidence({}, 5) == 0.0


def ground_output(phrase: str, spread: int, profile: str = "nv-reason-cxr", **overrides):
    from dataclasses import replace

    text = "[10, 20, 40, 80]"
    starts = [text.index(v) for v in ("10", "20", "40", "80")]
    beliefs = [numbers.NumberBelief(s, s + 2, belief(int(text[s:s + 2]), spread)) for s in starts]
    generation = Generation(text, 12, 0.0, 0.0, None, numbers=beliefs)
    model = CxrModel("scripted", replace(PROFILES[profile], box_format="int100", **overrides), ScriptedEngine(text))
    image = XrayImage(pixels=np.zeros((100, 200), np.uint8), source="x.png")
    return model.structure(Task.GROUND, generation, Study(images=[image]), phrase=phrase)


def test_box_score_comes_from_the_coordinates_beliefs():
    sure, unsure = ground_output("right lung", 1), ground_output("right lung", 30)
    assert 0 <= unsure.boxes[0].score < 0.5 < sure.boxes[0].score <= 1
    assert not sure.warnings
    assert any("spread wide" in w for w in unsure.warnings)


def test_a_phrase_outside_the_declared_vocabulary_scores_zero_with_a_warning():
    out = ground_output("heart", 1, grounding_phrases=("right lung", "left lung"))
    assert out.boxes[0].score == 0.0
    assert any("'heart' is not among what scripted was trained to locate" in w for w in out.warnings)
    assert not ground_output("Right Lung", 1, grounding_phrases=("right lung",)).warnings
    assert not ground_output("heart", 1).warnings  # no declared vocabulary: no warning


def test_cxrlm_json_declares_the_grounding_vocabulary(tmp_path):
    assert resolve_profile(DEFAULT_MODEL_DIR).grounding_phrases == ("right lung", "left lung")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    (tmp_path / "cxrlm.json").write_text(json.dumps({"grounding_phrases": ["Heart "]}))
    assert resolve_profile(tmp_path).grounding_phrases == ("heart",)


def test_heart_on_a_real_radiograph_gets_a_low_score_and_a_warning(shipped, fixture_pngs):
    from cxrlm.io import load_study

    study = load_study([fixture_pngs[0]])
    lung = shipped.predict(study, Task.GROUND, phrase="right lung")
    heart = shipped.predict(study, Task.GROUND, phrase="heart")
    assert lung.boxes[0].score >= 0.5 and not lung.warnings
    assert heart.boxes[0].score == 0.0 and any("not among" in w for w in heart.warnings)


# --- surfaces


def test_cli_heatmap_writes_an_overlay_png(tmp_path):
    from test_cli import run_cli

    image = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 200), dtype=np.uint8)).save(image)
    for verb, extra in (("classify", ["--heatmap-label", "Effusion"]), ("ground", ["right lung"])):
        out = tmp_path / f"{verb}.png"
        result = run_cli(verb, image, *extra, "--heatmap", out, "--model", DEFAULT_MODEL_DIR, "--device", "cpu")
        assert result.returncode == 0, result.stderr
        assert Image.open(out).size == (200, 256) and Image.open(out).mode == "RGB"
    bad = run_cli("classify", image, "--heatmap", tmp_path / "x.png", "--heatmap-label", "Elbow",
                  "--model", DEFAULT_MODEL_DIR, "--device", "cpu")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --heatmap-label")


def test_engines_without_gradients_say_so(shipped, xray):
    from dataclasses import replace

    from cxrlm.errors import ConfigError

    model = CxrModel("scripted", shipped.profile, ScriptedEngine("x"))
    model.engine.capabilities = replace(model.engine.capabilities, heatmaps=False)
    with pytest.raises(ConfigError, match="no heatmaps"):
        model.heatmap(Study(images=[xray]), Task.CLASSIFY, "Edema")


def test_overlay_png_has_the_image_size():
    png = heatmaps.overlay_png(np.zeros((30, 40), np.uint8), np.ones((30, 40), np.float32) / 1200)
    assert heatmaps.data_url(png).startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(heatmaps.data_url(png).split(",", 1)[1])))
    assert decoded.size == (40, 30)


def test_the_engine_records_where_each_expected_value_number_is(shipped, xray):
    from cxrlm.prompts.templates import task_prompt

    study = Study(images=[xray])
    turn = shipped.first_turn(task_prompt(shipped.dialect, Task.GROUND, "right lung"), study)
    generation = shipped.generate([turn], study, mean_numbers=True)
    assert len(generation.numbers) >= 4
    assert all(generation.text[b.start:b.end].isdigit() and b.values for b in generation.numbers)
    out = shipped.structure(Task.GROUND, generation, study, phrase="right lung")
    assert out.boxes and all(0 <= b.score <= 1 for b in out.boxes)


def test_eval_heatmaps_verb_reports_both_checks(tmp_path):
    from test_cli import run_cli

    rng = np.random.default_rng(2)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (160, 128), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "boxes.csv").write_text("image,label,x1,y1,x2,y2\na.png,Infiltrate,10,20,60,90\n"
                                        "b.png,Right Lung,5,10,60,150\n")
    out = tmp_path / "result.json"
    result = run_cli("eval", "heatmaps", "--images", tmp_path, "--boxes", tmp_path / "boxes.csv", "--limit", "2",
                     "--out", out, "--model", DEFAULT_MODEL_DIR, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["randomization"]["images"] == 2
    labels = {row["label"] for row in data["box_mass"]["per_box"]}
    assert labels <= {"Infiltration", "right lung"} and "Infiltration" in labels
    assert "Spearman" in result.stdout and "reader boxes" in result.stdout
    assert run_cli("eval", "heatmaps", "--method", "smoothgrad", "--images", tmp_path).returncode == 2
