"""CNN baselines (cxrlm_tiny.cnn, `cxrlm eval cnn-baselines`) on a tiny synthetic manifest: 64x64 PNGs drawn here,
1 epoch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from cxrlm.cli import main
from cxrlm.data.manifest import ManifestRecord, make_box, read_manifest, write_manifest
from cxrlm.pathologies import NIH14
from cxrlm_tiny import cnn

SIDE = 64


def _image(path, rng, bright: bool) -> None:
    from PIL import Image

    pixels = rng.integers(0, 80, (SIDE, SIDE), dtype=np.uint8)
    if bright:  # a bright square the classifier could learn: "Cardiomegaly" below
        pixels[20:44, 20:44] = 220
    Image.fromarray(pixels).save(path)


def _record(tmp_path, i: int, split: str, rng) -> ManifestRecord:
    positive = i % 2 == 0
    _image(tmp_path / f"{i}.png", rng, positive)
    labels = {name: 0 for name in NIH14} | {"Cardiomegaly": int(positive), "Effusion": int(i % 3 == 0)}
    boxes = [
        make_box("right lung", [4 + i % 3, 8, 30, 56], kind="anatomy"),
        make_box("left lung", [34, 8 + i % 4, 60, 56], kind="anatomy"),
    ]
    return ManifestRecord(
        dataset="synthetic",
        study_id=str(i),
        patient_id=str(i),
        image=f"{i}.png",
        root=str(tmp_path),
        split=split,
        source_labels=labels,
        boxes=boxes,
        width=SIDE,
        height=SIDE,
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    rng = np.random.default_rng(0)
    records = [_record(folder, i, "train" if i < 8 else "val", rng) for i in range(12)]
    path = folder / "m.jsonl"
    write_manifest(records, path)
    return path


def baselines(*argv: str) -> int:
    return main(["eval", "cnn-baselines", *argv])


def _run(task: str, manifest, out, *extra: str) -> dict:
    argv = [task, "--manifest", str(manifest), "--seeds", "0", "--epochs", "1", "--size", "64", "--out", str(out)]
    assert baselines(*argv, *extra) == 0
    return json.loads(out.read_text())


def test_classify_writes_finite_aurocs(manifest, tmp_path):
    result = _run("classify", manifest, tmp_path / "c.json", "--min-positives", "2")
    val = result["splits"]["val"]
    run = val["per_seed"][0]
    assert result["train_items"] == 8 and run["items"] == 4
    # val has items 8-11: Cardiomegaly positive on 8 and 10, Effusion on 9 only, the rest never positive.
    assert run["macro_labels"] == ["Cardiomegaly"]
    assert run["per_label"]["Effusion"]["positives"] == 1 and 0 <= run["per_label"]["Effusion"]["auroc"] <= 1
    assert run["per_label"]["Mass"]["auroc"] is None  # one class only: undefined, not 0.5
    assert math.isfinite(val["macro_auroc"]["mean"]) and math.isfinite(val["macro_auroc_all_defined"]["mean"])
    assert result["settings"]["epochs"] == 1 and result["settings"]["seeds"] == [0]


def test_classification_scores_hand_case():
    truth = np.zeros((4, len(NIH14)))
    truth[:, 1] = [1, 1, 0, 0]  # Cardiomegaly: both positives ranked above both negatives
    truth[:, 2] = [1, 0, 0, np.nan]  # Effusion: one positive, one item not labelled
    scores = np.zeros((4, len(NIH14)))
    scores[:, 1] = [0.9, 0.8, 0.1, 0.2]
    scores[:, 2] = [0.1, 0.5, 0.2, 0.9]
    out = cnn.classification_scores(truth, scores, min_positives=2)
    assert out["macro_labels"] == ["Cardiomegaly"] and out["macro_auroc"] == 1.0
    assert out["per_label"]["Effusion"] == {"auroc": 0.0, "positives": 1}
    assert out["macro_auroc_all_defined"] == 0.5
    assert cnn.classification_scores(truth, scores, min_positives=10)["macro_auroc"] is None


def test_ground_mean_box_and_regressor(manifest, tmp_path):
    result = _run("ground", manifest, tmp_path / "g.json")
    assert result["labels"] == ["left lung", "right lung"]
    val = result["splits"]["val"]
    assert 0.8 < val["mean_box"]["mean_iou"] <= 1  # boxes barely move between images
    assert 0 <= val["resnet18"]["mean"] <= 1 and len(val["per_seed"]) == 1


def test_mean_box_hand_case(tmp_path):
    train = [
        ManifestRecord(
            dataset="d", study_id=str(i), patient_id=str(i), width=w, height=h, boxes=[make_box("right lung", xyxy)]
        )
        for i, (w, h, xyxy) in enumerate([(100, 100, [0, 0, 50, 50]), (200, 100, [100, 50, 200, 100])])
    ]
    # image-relative: (0, 0, .5, .5) and (.5, .5, 1, 1) -> mean (.25, .25, .75, .75)
    predicted = cnn.mean_box_prediction(train, ["right lung"], 1)
    np.testing.assert_allclose(predicted[0, 0], [0.25, 0.25, 0.75, 0.75])
    target = ManifestRecord(dataset="d", study_id="t", patient_id="t", width=400, height=200)
    scores = cnn.grounding_scores([target], np.array([[[0.25, 0.25, 0.75, 0.75]]]), predicted, ["right lung"])
    assert scores["mean_iou"] == pytest.approx(1.0)
    half = cnn.grounding_scores([target], np.array([[[0.25, 0.25, 0.5, 0.75]]]), predicted, ["right lung"])
    assert half["per_label"]["right lung"] == pytest.approx(0.5)


def test_crop_moves_boxes_with_the_image():
    import torch

    image = torch.zeros((1, 1, 40, 40))
    image[..., 10:20, 20:30] = 1.0  # a box at x 20-30, y 10-20 of 40 -> (.5, .25, .75, .5)
    window = np.array([[0.25, 0.0, 0.75, 0.75]])  # x 10-40, y 0-30
    cropped = cnn.crop_images(image, window, 60)[0, 0].numpy()
    moved = cnn.crop_boxes(np.array([[[0.5, 0.25, 0.75, 0.5]]]), window)[0, 0]
    ys, xs = np.nonzero(cropped > 0.5)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 60
    np.testing.assert_allclose(found, moved, atol=2 / 60)


def test_records_with_missing_boxes_are_skipped():
    record = ManifestRecord(
        dataset="d", study_id="1", patient_id="1", width=10, height=10, boxes=[make_box("right lung", [0, 0, 5, 5])]
    )
    assert cnn.norm_boxes(record, ["left lung", "right lung"]) is None
    assert cnn.norm_boxes(record, ["right lung"]).tolist() == [[0, 0, 0.5, 0.5]]


def test_boxes_of_other_labels_do_not_hide_the_lungs():
    boxes = [make_box("right lung", [0, 0, 5, 10]), make_box("left lung", [5, 0, 10, 10]), make_box("Nodule", [1, 1, 2, 2])]
    record = ManifestRecord(dataset="d", study_id="1", patient_id="1", width=10, height=10, boxes=boxes)
    assert cnn.norm_boxes(record, ["right lung", "left lung"]).tolist() == [[0, 0, 0.5, 1], [0.5, 0, 1, 1]]
    twice = ManifestRecord(dataset="d", study_id="1", patient_id="1", width=10, height=10, boxes=boxes + boxes[:1])
    assert cnn.norm_boxes(twice, ["right lung", "left lung"]) is None


def test_errors_are_one_line(manifest, tmp_path, capsys):
    assert baselines("ground", "--manifest", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.json")) == 2
    assert "not found" in capsys.readouterr().err
    assert baselines("classify", "--manifest", str(manifest), "--seeds", "a", "--out", str(tmp_path / "o.json")) == 2
    assert capsys.readouterr().err.startswith("error: --seeds")
    no_train = tmp_path / "val_only.jsonl"
    write_manifest([r for r in read_manifest(manifest) if r.split == "val"], no_train)
    assert baselines("ground", "--manifest", str(no_train), "--out", str(tmp_path / "o.json")) == 2
    assert "fewer than 2 training images" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_same_seed_same_result(manifest, tmp_path):
    first = _run("ground", manifest, tmp_path / "a.json", "--size", "32")["splits"]["val"]["per_seed"]
    again = _run("ground", manifest, tmp_path / "b.json", "--size", "32")["splits"]["val"]["per_seed"]
    assert first == again


def test_missing_split_is_an_input_error(manifest, tmp_path, capsys):
    argv = ["classify", "--manifest", str(manifest), "--splits", "val,test", "--out", str(tmp_path / "o.json")]
    assert baselines(*argv) == 2
    assert "no images in split(s) ['test']" in capsys.readouterr().err
