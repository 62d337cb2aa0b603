"""The shipped cxrlm-tiny: picked up with no --model, small, documented, and its answers parse on real images."""

import json
import subprocess
import sys

import pytest

from cxrlm.models import DEFAULT_MODEL_DIR
from cxrlm.pathologies import CLASSIFY_LABELS

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="cxrlm-tiny not present")


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cxrlm", *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=300, env=env)


@pytest.fixture(scope="module")
def tiny():
    from cxrlm.models import load_model

    return load_model(device="cpu")  # no path: the default


def test_the_shipped_folder_is_complete_small_and_documented():
    weights = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.glob("*.safetensors"))
    assert 0 < weights <= 60e6
    for name in ("config.json", "tokenizer.json", "processor_config.json", "cxrlm.json", "MODEL_CARD.md"):
        assert (DEFAULT_MODEL_DIR / name).is_file(), name
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert "not a diagnostic" in card and "non-commercial" in card and "synthetic" in card


def test_reasoning_answers_parse_on_real_images(tiny, fixture_pngs):
    from cxrlm.eval.reasoning import parses
    from cxrlm.io import load_image

    for path in fixture_pngs[:3]:
        out = tiny.predict(load_image(path), "reason")
        assert parses(out), (path.name, out.warnings, out.raw_text[-200:])


def test_classify_json_has_every_label_in_both_vocabularies(fixture_pngs):
    result = cli("classify", fixture_pngs[0], "--json")
    assert result.returncode == 0, result.stderr
    probabilities = json.loads(result.stdout)["probabilities"]
    assert list(probabilities) == list(CLASSIFY_LABELS)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())


def test_classify_labels_accepts_nih_and_chexpert_names(fixture_pngs, tmp_path):
    result = cli("classify", fixture_pngs[0], "--json", "--labels", "effusion, Pleural Effusion,pleural_thickening")
    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)["probabilities"]) == ["Effusion", "Pleural Effusion", "Pleural_Thickening"]
    bad = cli("classify", fixture_pngs[0], "--labels", "Effusion,pleural efusion")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "pleural efusion" in bad.stderr


def test_ground_finds_a_lung_box_in_original_pixels(fixture_pngs):
    result = cli("ground", fixture_pngs[0], "right lung", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    (box,) = out["boxes"]
    x1, y1, x2, y2 = box["xyxy"]
    width, height = out["image_size"]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert x2 <= 0.75 * width  # the patient's right lung is on the image's left


def test_models_lists_the_default_and_configured_folders(tiny_checkpoint):
    import os

    env = {**os.environ, "CXRLM_MODELS": str(tiny_checkpoint.parent)}
    result = cli("models", env=env)
    assert result.returncode == 0
    assert f"default: {DEFAULT_MODEL_DIR} (profile nv-reason-cxr" in result.stdout
    assert str(tiny_checkpoint) in result.stdout
