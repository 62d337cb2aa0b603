"""The cxrlm-tiny recipe's parts (cxrlm_tiny; `cxrlm train tiny`): encoder pretraining, mask boxes, instruction rows,
the vision-token cache."""

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlm.data.instructions import load_templates
from cxrlm.data.manifest import ManifestRecord, normal_labels
from cxrlm.pathologies import CLASSIFY_LABELS, label_phrase
from cxrlm.prompts.templates import NV_REASON
from cxrlm.cli import main
from cxrlm.train.build import cache_vision_tokens
from cxrlm_tiny import encoder
from cxrlm_tiny import recipe as tiny_recipe

SMALL_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=28, window_size=112,
                    fullatt_block_indexes=[0, 1])


@pytest.fixture(scope="module")
def patch28_checkpoint(tmp_path_factory):
    from cxrlm.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("p28") / "ckpt", vision=SMALL_VISION, patch_size=28,
                                 max_pixels=112 * 112)


def _visual(checkpoint):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint)
    return model.model.visual, AutoProcessor.from_pretrained(checkpoint).image_processor


def _images(n, size=(112, 96)):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8)).convert("RGB") for _ in range(n)]


def test_linear_patch_embed_matches_the_conv(patch28_checkpoint):
    visual, processor = _visual(patch28_checkpoint)
    batch = processor(images=_images(2), return_tensors="pt")
    with torch.no_grad():
        conv = visual.patch_embed(batch["pixel_values"])
        encoder.linear_patch_embed(visual)
        linear = visual.patch_embed(batch["pixel_values"])
    assert torch.allclose(conv, linear, atol=1e-4)


def test_augment_moves_boxes_with_the_crop():
    image = np.zeros((200, 100), dtype=np.uint8)
    image[50:150, 20:60] = 255  # a bright "lung" where the box says
    item = encoder.Item(image, np.full(14, np.nan, np.float32),
                        np.array([[0.2, 0.25, 0.6, 0.75], [0.0, 0.0, 1.0, 1.0]], np.float32))
    rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(1)
    for _ in range(5):
        crop, boxes = encoder.augment(item, rng, gen, jitter=0.0)
        pixels = np.asarray(crop.convert("L"))
        h, w = pixels.shape
        x1, y1, x2, y2 = (boxes[0] * [w, h, w, h]).round().astype(int)
        inside = pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
        assert inside.size and inside.min() == 255  # the moved box still covers the bright block
        assert 0.8 * 100 - 1 <= w <= 100 and 0.8 * 200 - 1 <= h <= 200


def test_augmentation_depends_on_seed_epoch_and_index_only():
    rng = np.random.default_rng(0)
    items = [encoder.Item(rng.integers(0, 256, (60, 50), dtype=np.uint8), np.zeros(14, np.float32),
                          np.array([[0.1, 0.2, 0.4, 0.8], [0.6, 0.2, 0.9, 0.8]], np.float32)) for _ in range(4)]
    config = encoder.EncoderConfig(seed=3)
    first, again = encoder.Augmented(items, config, epoch=0), encoder.Augmented(items, config, epoch=0)
    assert np.array_equal(np.asarray(first[2][0]), np.asarray(again[2][0]))
    assert not np.array_equal(np.asarray(first[2][0]), np.asarray(encoder.Augmented(items, config, 1)[2][0]))
    # worker processes draw the same images as the main process
    loader = torch.utils.data.DataLoader(first, batch_size=None, num_workers=2)
    for (image, _, boxes), (alone, _, alone_boxes) in zip(loader, (first[i] for i in range(4))):
        assert np.array_equal(np.asarray(image), np.asarray(alone)) and np.array_equal(boxes, alone_boxes)


def test_mirror_keeps_the_right_lung_on_the_image_left():
    image = np.zeros((100, 100), dtype=np.uint8)
    image[20:80, 10:40] = 255  # only the image-left lung is bright
    item = encoder.Item(image, np.full(14, np.nan, np.float32),
                        np.array([[0.1, 0.2, 0.4, 0.8], [0.6, 0.2, 0.9, 0.8]], np.float32))
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    crop, boxes = encoder.augment(item, rng, gen, jitter=0.0, flip=1.0)
    pixels = np.asarray(crop.convert("L"))
    h, w = pixels.shape
    assert boxes[0][2] <= 0.5 <= boxes[1][0]  # box 0, the "right lung", is still on the image's left
    x1, y1, x2, y2 = (boxes[1] * [w, h, w, h]).round().astype(int)
    assert pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() == 255  # the bright lung moved to the right, with its box


def test_loss_reads_the_mean_token_and_every_token():
    labels = torch.tensor([[1.0, float("nan")]])
    boxes = torch.tensor([[[0.1, 0.1, 0.4, 0.9], [0.6, 0.1, 0.9, 0.9]]])
    right = (torch.tensor([[9.0, 0.0]] * 3), boxes[0].expand(3, 2, 4))  # mean row + 2 tokens, all correct
    wrong_token = (torch.tensor([[9.0, 0.0], [9.0, 0.0], [-9.0, 0.0]]), boxes[0].expand(3, 2, 4))
    assert encoder.loss_fn([right], labels, boxes, 5.0, 1.0) < 1e-3
    assert encoder.loss_fn([wrong_token], labels, boxes, 5.0, 1.0) > 1.0  # one token alone is wrong
    assert encoder.loss_fn([wrong_token], labels, boxes, 5.0, 0.0) < 1e-3


def test_an_anchored_label_loss_pulls_towards_the_anchor_not_the_labels():
    labels = torch.tensor([[1.0, 0.0]])
    boxes = torch.tensor([[[0.1, 0.1, 0.4, 0.9], [0.6, 0.1, 0.9, 0.9]]])
    logits = torch.tensor([[-2.0, 3.0]] * 3, requires_grad=True)  # mean row + 2 tokens, all against the labels
    anchor = [(torch.tensor([[-2.0, 3.0]] * 3), boxes[0].expand(3, 2, 4))]
    encoder.loss_fn([(logits, boxes[0].expand(3, 2, 4))], labels, boxes, 5.0, 1.0, anchor).backward()
    assert logits.grad.abs().max() < 1e-6  # the anchor's own outputs: nothing to learn
    encoder.loss_fn([(logits, boxes[0].expand(3, 2, 4))], labels, boxes, 5.0, 1.0).backward()
    assert logits.grad[:, 0].min() < 0 < logits.grad[:, 1].min()  # the labels pull the other way


def test_pretrain_runs_and_writes_the_tower_back(patch28_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(patch28_checkpoint, ckpt)
    before = load_file(ckpt / "model.safetensors")
    rng = np.random.default_rng(0)
    labels = np.where(rng.random((6, 14)) < 0.5, 1.0, 0.0).astype(np.float32)
    boxes = np.array([[0.1, 0.1, 0.45, 0.9], [0.55, 0.1, 0.9, 0.9]], np.float32)
    items = [encoder.Item(rng.integers(0, 256, (120, 110), dtype=np.uint8), labels[i],
                          boxes if i % 2 else np.full((2, 4), np.nan, np.float32)) for i in range(6)]
    log = encoder.pretrain(ckpt, items, items, encoder.EncoderConfig(epochs=2, batch_size=3, min_positives=1))
    assert [e["epoch"] for e in log["epochs"]] == [2]  # checked every 5 epochs and at the last
    assert 0.0 <= log["epochs"][-1]["lung_iou"] <= 1.0
    after = load_file(ckpt / "model.safetensors")
    changed = [k for k in before if "visual" in k and not torch.equal(before[k], after[k])]
    assert changed and all(torch.equal(before[k], after[k]) for k in before if "visual" not in k)
    assert "patch_embed.proj.weight" in " ".join(after)  # saved in the checkpoint's own layout


def test_a_stopped_pretraining_goes_on_to_the_same_tower(patch28_checkpoint, tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file

    from cxrlm.errors import ConfigError

    rng = np.random.default_rng(0)
    boxes = np.array([[0.1, 0.1, 0.45, 0.9], [0.55, 0.1, 0.9, 0.9]], np.float32)
    items = [encoder.Item(rng.integers(0, 256, (120, 110), dtype=np.uint8),
                          np.where(rng.random(14) < 0.5, 1.0, 0.0).astype(np.float32), boxes) for _ in range(6)]
    # anchored from epoch 2 (index 1): the frozen anchor is part of the state a stopped run goes on from
    config = encoder.EncoderConfig(epochs=3, batch_size=3, min_positives=1, eval_every=1, label_anchor=1)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    shutil.copytree(patch28_checkpoint, whole)
    shutil.copytree(patch28_checkpoint, stopped)
    encoder.pretrain(whole, items, items, config)
    assert (whole / encoder.STATE_FILE).is_file()  # kept: a recipe stopped in a later stage gets this tower back

    checks = []

    def stop_at_the_last_check(*args):
        checks.append(1)
        if len(checks) == 3:
            raise KeyboardInterrupt
        return {"macro_auroc": 0.5, "lung_iou": 0.5}

    with monkeypatch.context() as patch:
        patch.setattr(encoder, "evaluate", stop_at_the_last_check)
        with pytest.raises(KeyboardInterrupt):
            encoder.pretrain(stopped, items, items, config)
    assert (stopped / encoder.STATE_FILE).is_file()
    with pytest.raises(ConfigError, match="other settings or images"):
        encoder.pretrain(stopped, items, items, encoder.EncoderConfig(epochs=4, batch_size=3, min_positives=1))
    with pytest.raises(ConfigError, match="other settings or images"):
        encoder.pretrain(stopped, items[:5], items, config)
    log = encoder.pretrain(stopped, items, items, config)
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3]
    assert log["epochs"][1]["lung_iou"] == 0.5  # epochs 1-2 came from the saved state, not run again
    a, b = load_file(whole / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    # a finished run is not trained again: a fresh checkpoint gets its tower from the state alone
    fresh = tmp_path / "fresh"
    shutil.copytree(patch28_checkpoint, fresh)
    with monkeypatch.context() as patch:
        patch.setattr(encoder, "forward", lambda *args: pytest.fail("a finished pretraining was trained again"))
        assert encoder.pretrain(fresh, items, items, config, whole / encoder.STATE_FILE)["epochs"][-1]["epoch"] == 3
    c = load_file(fresh / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    # and a finished run's state with other settings is trained over, not an error
    other = encoder.EncoderConfig(epochs=1, batch_size=3, min_positives=1)
    log = encoder.pretrain(fresh, items, items, other, whole / encoder.STATE_FILE)
    assert [e["epoch"] for e in log["epochs"]] == [1]


def test_cached_vision_tokens_equal_the_tower_and_are_computed_once(patch28_checkpoint):
    visual, processor = _visual(patch28_checkpoint)
    visual.requires_grad_(False)
    images = _images(3)
    batch = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        plain = visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
    calls = []
    original = visual.forward
    visual.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    cache_vision_tokens(visual)
    first = visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
    again = processor(images=[images[2], images[0]], return_tensors="pt")
    second = visual(again["pixel_values"], grid_thw=again["image_grid_thw"]).pooler_output
    assert torch.allclose(first, plain, atol=1e-5)
    per_image = plain.shape[0] // 3
    assert torch.allclose(second, torch.cat([plain[2 * per_image :], plain[:per_image]]), atol=1e-5)
    assert len(calls) == 1  # the second batch came from the cache


def test_mask_boxes_split_two_blobs_into_right_and_left_lung(tmp_path):
    from PIL import Image

    (tmp_path / "lung_masks").mkdir()
    mask = np.zeros((100, 120), dtype=np.uint8)
    mask[10:90, 10:50] = 255  # image left = patient's right lung
    mask[15:85, 70:110] = 255
    mask[0:2, 0:2] = 255  # a speck, ignored
    Image.fromarray(mask).save(tmp_path / "lung_masks" / "a.png")
    record = ManifestRecord("covid-chestxray", "a", "p", image="images/a.jpg", width=120, height=100)
    boxes = tiny_recipe.add_mask_boxes(record, tmp_path).boxes
    assert [b["label"] for b in boxes] == ["right lung", "left lung"]
    assert boxes[0]["xyxy"] == [10.0, 10.0, 50.0, 90.0] and boxes[1]["xyxy"] == [70.0, 15.0, 110.0, 85.0]
    boxed = ManifestRecord("covid-chestxray", "a", "p", image="images/a.jpg", width=120, height=100,
                           boxes=[{"label": "right lung", "xyxy": [1, 1, 5, 5], "kind": "anatomy"}])
    assert tiny_recipe.add_mask_boxes(boxed, tmp_path).boxes == boxed.boxes  # reader boxes win
    wrong_size = ManifestRecord("covid-chestxray", "a", "p", image="images/a.jpg", width=60, height=50)
    assert tiny_recipe.add_mask_boxes(wrong_size, tmp_path).boxes == []


def test_sft_turns_ask_exactly_what_inference_asks():
    labels = normal_labels()
    labels.update({"No Finding": 0, "Cardiomegaly": 1})
    record = ManifestRecord("nih14", "s", "p", image="x.jpg", width=512, height=512, labels=labels,
                            source_labels={"Cardiomegaly": 1, "Effusion": 0, "Infiltration": 1},
                            boxes=[{"label": "right lung", "xyxy": [51.2, 0, 256, 512], "kind": "anatomy"}])
    turns = tiny_recipe.sft_turns(record, random.Random(0), load_templates(), questions=4)
    by_task = {t.task: t for t in turns}
    assert by_task["reason"].user == NV_REASON.reason and by_task["reason"].synthetic
    assert by_task["reason"].assistant.startswith("<think>") and "<answer>Cardiomegaly</answer>" in by_task["reason"].assistant
    questions = [t for t in turns if t.task == "classify"]
    assert len(questions) == 4
    for t in questions:
        name = next(n for n in CLASSIFY_LABELS if NV_REASON.classify_question.format(label=label_phrase(n)) == t.user)
        assert t.assistant == ("Yes." if tiny_recipe.label_value(record, name) == 1 else "No.")
    assert sum(t.assistant == "Yes." for t in questions) == 2  # both known positives are asked about
    assert by_task["ground"].user == NV_REASON.ground.format(phrase="right lung")
    assert by_task["ground"].assistant == "[10, 0, 50, 100]"
    short = tiny_recipe.sft_turns(record, random.Random(0), load_templates(), questions=4, texts=False)
    assert {t.task for t in short} == {"classify", "ground"}  # augmented copies: no review, no report


def test_write_sft_makes_one_conversation_per_image(tmp_path):
    labels = normal_labels()
    records = [ManifestRecord("nih14", f"s{i}", f"p{i}", image=f"/abs/{i}.jpg", labels=labels) for i in range(3)]
    assert tiny_recipe.write_sft(records, tmp_path / "sft.jsonl", questions=2, seed=0) == 3
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert all(row["messages"][0]["content"][0]["type"] == "image" for row in rows)
    assert all(sum(m["role"] == "assistant" for m in row["messages"]) >= 2 for row in rows)


def test_single_turn_rows_ask_every_question_first(tmp_path):
    labels = normal_labels()
    records = [ManifestRecord("nih14", f"s{i}", f"p{i}", image=f"/abs/{i}.jpg", labels=labels) for i in range(3)]
    conversations = tiny_recipe.write_sft(records, tmp_path / "multi.jsonl", questions=2, seed=0)
    single = tiny_recipe.write_sft(records, tmp_path / "single.jsonl", questions=2, seed=0, single_turn=True)
    multi_rows = [json.loads(line) for line in (tmp_path / "multi.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines()]
    turns = sum(sum(m["role"] == "assistant" for m in row["messages"]) for row in multi_rows)
    assert conversations == 3 and single == len(rows) == turns
    assert all([m["role"] for m in row["messages"]] == ["user", "assistant"] for row in rows)
    assert all(row["messages"][0]["content"][0]["type"] == "image" for row in rows)


def test_soft_answers_go_to_their_yes_no_rows_and_to_the_copies(tmp_path):
    labels = normal_labels()
    soft = {"Cardiomegaly": 0.3, "Effusion": 0.8}
    record = ManifestRecord("nih14", "s", "p", image="/abs/0.jpg", labels=labels, extra={tiny_recipe.SOFT: soft},
                            source_labels={"Cardiomegaly": 0, "Effusion": 1})
    copy = replace(record, image="/abs/0-copy.jpg")
    tiny_recipe.write_sft([record], tmp_path / "soft.jsonl", questions=30, seed=0, copies=[copy], single_turn=True)
    rows = [json.loads(line) for line in (tmp_path / "soft.jsonl").read_text().splitlines()]
    assert all("yes_prob" in row for row in rows)  # a dataset's columns are its first row's
    asked = {(row["images"][0], row["messages"][0]["content"][-1]["text"]): row["yes_prob"] for row in rows}
    for image in ("/abs/0.jpg", "/abs/0-copy.jpg"):
        for name, p in soft.items():
            assert asked[image, NV_REASON.classify_question.format(label=label_phrase(name))] == p
    assert asked["/abs/0.jpg", NV_REASON.reason] is None  # the review keeps its text answer
    assert sum(p is not None for p in asked.values()) == 4


def _random_records(folder):
    from PIL import Image

    records = []
    for i in range(2):
        path = folder / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (96, 112), dtype=np.uint8)).save(path)
        records.append(ManifestRecord("nih14", f"s{i}", f"p{i}", image=str(path), width=112, height=96,
                                      labels=normal_labels(), split="train"))
    return records


def test_sft_rows_do_not_depend_on_where_the_work_folder_is(tmp_path):
    (tmp_path / "data").mkdir()
    records = [replace(r, image=Path(r.image).name, root=str(tmp_path / "data"))
               for r in _random_records(tmp_path / "data")]
    texts = []
    for work in ("a", "b/deeper"):
        copies = tiny_recipe.augmented_records(records, tmp_path / work / "images", 3, 3, seed=0)
        assert all(c.image_path.is_file() for c in copies)
        tiny_recipe.write_sft(records, tmp_path / work / "sft.jsonl", questions=4, seed=0, copies=copies)
        texts.append([json.loads(line)["messages"] for line in (tmp_path / work / "sft.jsonl").read_text().splitlines()])
    assert texts[0] == texts[1]  # the same questions in the same order: the recipe reproduces from any --work


def _trains_only_the_language_model(before_dir, after_dir):
    from safetensors.torch import load_file

    before, after = load_file(before_dir / "model.safetensors"), load_file(after_dir / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if "visual" not in k)
    assert all(torch.equal(before[k], after[k]) for k in before if "visual" in k)


@pytest.mark.slow
def test_single_turn_stage_trains_the_language_model_and_keeps_the_tower(patch28_checkpoint, tmp_path):
    import argparse

    args = argparse.Namespace(seed=0, questions=2, single_turn_steps=2, single_turn_lr=1e-3)
    out = tiny_recipe.single_turn_sft(patch28_checkpoint, _random_records(tmp_path), tmp_path / "work", args)
    _trains_only_the_language_model(patch28_checkpoint, out)


@pytest.mark.slow
def test_label_distillation_asks_every_label_with_the_towers_probes(patch28_checkpoint, tmp_path, monkeypatch):
    import argparse

    from cxrlm_tiny import probes

    records, asked_model = _random_records(tmp_path), []

    def fake_probes(model_dir, images, targets, seed):  # the probes' cross-fitting is tested in test_tiny_probes.py
        asked_model.append(model_dir)
        return {image: {name: 0.25 for name, t in targets.items() if not np.isnan(t[i])}
                for i, image in enumerate(images)}

    monkeypatch.setattr(probes, "soft_answers", fake_probes)
    args = argparse.Namespace(seed=0, questions=2, single_turn_lr=1e-3, distil_steps=2)
    out = tiny_recipe.label_distillation(patch28_checkpoint, records, tmp_path / "work", args)
    rows = [json.loads(line) for line in (tmp_path / "work" / "distil.jsonl").read_text().splitlines()]
    known = [n for n in CLASSIFY_LABELS if tiny_recipe.label_value(records[0], n) is not None]
    soft = [row["yes_prob"] for row in rows if row["yes_prob"] is not None]
    assert asked_model == [patch28_checkpoint]
    assert soft == [0.25] * (len(known) * 2 * 3)  # every label of two images and of two copies of each
    _trains_only_the_language_model(patch28_checkpoint, out)


def test_teacher_boxes_fill_unboxed_images_where_the_ensemble_agrees(tmp_path, monkeypatch):
    from PIL import Image

    from cxrlm_tiny import cnn

    def record(name, boxed, split="train"):
        Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / f"{name}.png")
        boxes = [{"label": "right lung", "xyxy": [5, 4, 20, 36], "kind": "anatomy"},
                 {"label": "left lung", "xyxy": [30, 4, 45, 36], "kind": "anatomy"}] if boxed else []
        return ManifestRecord("covid-chestxray", name, name, image=str(tmp_path / f"{name}.png"), width=50,
                              height=40, boxes=boxes, split=split)

    train = [record("boxed1", True), record("boxed2", True), record("agree", False), record("disagree", False)]
    masked = record("val-mask", True, "val")
    masked.boxes[0]["source"] = "lung_masks (model-predicted)"
    val = [record("val", True, "val"), masked]  # only reader boxes are scored, as by `cxrlm eval`
    def logit(p):
        return np.log(np.array([p]) / (1 - np.array([p])))

    good = logit([0.1, 0.1, 0.4, 0.9, 0.6, 0.1, 0.9, 0.9])
    off = logit([0.5, 0.5, 0.6, 0.6, 0.6, 0.1, 0.9, 0.9])  # this member puts the right lung elsewhere
    outputs = iter([np.concatenate([good, good, good]), np.concatenate([good, off, good])])  # per seed: agree, disagree, val
    monkeypatch.setattr(cnn, "train_net", lambda *a, **k: (None, (0.0, 1.0)))
    monkeypatch.setattr(cnn, "predict", lambda net, pixels, norm: next(outputs))
    boxes, val_iou = tiny_recipe.teacher_boxes(train, val, seeds=2)
    assert list(boxes) == [train[2].image]  # boxed images keep theirs; the disagreeing one gets none
    np.testing.assert_allclose(boxes[train[2].image], [[0.1, 0.1, 0.4, 0.9], [0.6, 0.1, 0.9, 0.9]], atol=1e-5)
    assert 0.5 < val_iou <= 1.0
    taught = tiny_recipe.with_teacher_boxes(train, boxes)
    assert taught[0].boxes == train[0].boxes and taught[3].boxes == []
    assert [b["source"] for b in taught[2].boxes] == ["ResNet-18 teachers (model-predicted)"] * 2
    np.testing.assert_allclose(taught[2].boxes[0]["xyxy"], [5, 4, 20, 36], atol=1e-3)  # back in pixels
    items = tiny_recipe.encoder_items(taught)
    assert len(items) == 3 and not np.isnan(items[2].boxes).any()  # the disagreeing image teaches nothing


def test_a_wrong_data_folder_is_a_one_line_error(tmp_path, capsys):
    argv = ["train", "tiny", "--data", str(tmp_path), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    message = f"error: --data {tmp_path} has no nih14/ folder: pass the folder that holds the shared datasets"
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize("options, anchor, epochs", [(["--label-anchor", "-1"], -1, 120),
                                                     (["--encoder-epochs", "30", "--label-anchor", "30"], 30, 30),
                                                     (["--encoder-epochs", "20"], 30, 20)])  # the default anchor
def test_a_label_anchor_outside_the_encoder_epochs_is_a_one_line_error(tmp_path, capsys, options, anchor, epochs):
    assert main(["train", "tiny", "--data", str(tmp_path), *options]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --label-anchor {anchor} must be 0 (none) or an epoch before --encoder-epochs {epochs}")


def test_the_recipe_command_shows_every_default_and_passes_only_its_options(tmp_path, monkeypatch, capsys):
    from cxrlm_tiny import recipe

    with pytest.raises(SystemExit):
        main(["train", "tiny", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for default in ("(default: ../shared/data)", "(default: 120)", "(default: 30)", "(default: 0.0003)"):
        assert default in shown  # the recipe is its defaults
    seen = {}

    def fake_run(data, work, out, args):
        seen.update(vars(args), where=(data, work, out))
        return {"stages_s": {"SFT": 1}}

    monkeypatch.setattr(recipe, "run", fake_run)
    assert main(["train", "tiny", "--out", str(tmp_path / "o"), "--grpo-steps", "0"]) == 0
    assert seen["where"] == (Path("../shared/data"), Path("runs/tiny-train"), tmp_path / "o")
    assert seen["grpo_steps"] == 0 and seen["encoder_epochs"] == 120 and seen["single_turn_lr"] == 3e-4
    assert not {"run", "verb", "method"} & set(seen)  # the training log keeps the recipe's own options only
    assert json.loads(capsys.readouterr().out) == {"SFT": 1}
