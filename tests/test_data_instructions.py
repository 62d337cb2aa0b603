"""Instruction datasets: box strings, every task, SFT/GRPO schemas (loaded with `datasets`), determinism."""

import json
import random

import pytest

from cxrlm.data.instructions import (
    BOX_FORMATS,
    TASKS,
    Context,
    InstructionConfig,
    build_instructions,
    format_box,
    format_boxes,
    load_templates,
    parse_mix,
    record_examples,
    write_instructions,
)
from cxrlm.data.manifest import ManifestRecord, make_box, normal_labels, write_manifest
from cxrlm.errors import ConfigError
from cxrlm.pathologies import CHEXPERT14
from cxrlm.prompts import parsers

TEMPLATES = load_templates()


def rec(name="a", split="train", **fields) -> ManifestRecord:
    base = {"dataset": "toy", "study_id": name, "patient_id": name, "image": f"images/{name}.png", "root": "/data",
            "view_position": "PA", "split": split, "width": 200, "height": 100}
    base.update(fields)
    return ManifestRecord(**base)


def effusion() -> ManifestRecord:
    record = rec("eff", boxes=[make_box("Effusion", (10, 50, 60, 90), chexpert="Pleural Effusion"),
                               make_box("right lung", (5, 5, 95, 95), "anatomy")])
    record.labels.update({"No Finding": 0, "Pleural Effusion": 1, "Cardiomegaly": 0, "Atelectasis": -1})
    return record


def normal() -> ManifestRecord:
    return rec("norm", labels=normal_labels())


def covid() -> ManifestRecord:
    record = rec("cov", extra={"brixia": {"A": 1, "B": 2, "C": 0, "D": 0, "E": 3, "F": 1}, "brixia_global": 7,
                               "geographic_extent_mean": 3.25})
    record.labels.update({"No Finding": 0, "Pneumonia": 1})
    return record


def reported() -> ManifestRecord:
    record = rec("rep", report={"findings": "Clear lungs.", "impression": "Normal.", "indication": None,
                                "comparison": None})
    record.labels.update(normal_labels())
    return record


def turn(task, record, seed=0, **config):
    ctx = Context(record, random.Random(seed), TEMPLATES, InstructionConfig(**config))
    from cxrlm.data.instructions import TURN_BUILDERS

    return TURN_BUILDERS[task](ctx)


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize("fmt, text", [("qwen", "[20, 25, 120, 75]"), ("norm1", "[0.10, 0.25, 0.60, 0.75]"),
                                       ("int100", "[10, 25, 60, 75]")])
def test_format_box(fmt, text):
    assert format_box((20, 25, 120, 75), (200, 100), fmt) == text


def test_format_box_clips_and_rejects_unknown():
    assert format_box((-5, -1, 250, 120), (200, 100), "int100") == "[0, 0, 100, 100]"
    with pytest.raises(ConfigError):
        format_box((0, 0, 1, 1), (10, 10), "xyxy")


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_box_strings_parse_back(fmt):
    """The project's own parser reads what the builder writes (same box, within rounding), in every format."""
    size = (640, 480)
    boxes = [make_box("nodule", (64, 48, 320, 240)), make_box("nodule", (400, 100, 600, 300))]
    text = format_boxes(boxes, size, fmt, "nodule")
    parsed = parsers.parse_boxes(text, size, box_format=fmt)
    assert len(parsed) == 2
    for box, truth in zip(parsed, boxes):
        assert box.xyxy == pytest.approx(truth["xyxy"], abs=4)
    if fmt == "qwen":
        assert json.loads(text)[0] == {"bbox_2d": [64, 48, 320, 240], "label": "nodule"}
        assert parsed[0].label == "nodule"


# ---------------------------------------------------------------- tasks


def test_reason_is_nv_reason_style_and_parses():
    t = turn("reason", effusion())
    assert t.user in TEMPLATES["prompts"]["reason"] and t.synthetic
    split = parsers.split_reasoning(t.assistant)
    assert not split.warnings and split.reasoning.startswith("Systematic review.")
    assert parsers.parse_labels(split.answer) == (["Atelectasis", "Pleural Effusion"], [])
    assert t.labels == ["Atelectasis", "Pleural Effusion"]
    # U-Zeros drops the uncertain atelectasis from the answer but the review still calls it possible
    zeros = turn("reason", effusion(), uncertain="negative")
    assert zeros.labels == ["Pleural Effusion"] and "atelectasis" in zeros.assistant.lower()


def test_review_says_nothing_about_unlabelled_regions():
    text = turn("reason", effusion()).assistant
    assert "Heart:" in text and "Pleura:" in text and "Airway:" in text
    assert "Bones:" not in text and "Devices:" not in text and "Mediastinum:" not in text


def test_normal_study_answers_no_finding():
    t = turn("reason", normal())
    assert t.answer == "No Finding" and "Bones:" in t.assistant  # No Finding implies no fracture
    assert "Devices:" not in t.assistant  # devices are not implied by No Finding


def test_no_reason_when_labels_cannot_tell():
    unknown = rec("u")  # every label null
    assert turn("reason", unknown) is None and turn("classify", unknown) is None and turn("report", unknown) is None


def test_report_real_or_synthetic():
    real = turn("report", reported())
    assert real.assistant == "Findings: Clear lungs.\nImpression: Normal." and not real.synthetic
    templated = turn("report", effusion())
    assert templated.synthetic and "Impression:" in templated.assistant
    assert parsers.parse_report(templated.assistant)[1].lower().count("pleural effusion") == 1


def test_classify_list_and_yes_no():
    answers = {turn("classify", effusion(), seed=s).assistant for s in range(30)}
    assert "Atelectasis, Pleural Effusion" in answers and {"Yes.", "No."} & answers
    for s in range(30):
        t = turn("classify", effusion(), seed=s)
        if t.answer in ("Yes.", "No."):
            phrase = next(p for name, p in TEMPLATES["finding_phrases"].items() if p in t.user)
            name = next(n for n, p in TEMPLATES["finding_phrases"].items() if p == phrase)
            assert (t.answer == "Yes.") == (effusion().labels[name] in (1, -1))


def test_ground_each_kind():
    seen = set()
    for s in range(20):
        t = turn("ground", effusion(), seed=s, box_format="norm1")
        seen.add(t.boxes[0]["label"])
        assert t.answer == format_box(t.boxes[0]["xyxy"], (200, 100), "norm1")
        assert t.boxes[0]["xyxy_norm"] == [round(v / d, 4) for v, d in zip(t.boxes[0]["xyxy"], (200, 100, 200, 100))]
    assert seen == {"Effusion", "right lung"}
    phrase = rec("ph", boxes=[make_box("Pneumonia", (1, 1, 50, 50), phrase="left basal opacity")])
    assert "left basal opacity" in turn("ground", phrase).user
    assert turn("ground", rec("none")) is None


def test_vqa_side_severity_and_presence():
    answers = {turn("vqa", effusion(), seed=s).answer for s in range(40)}
    assert "Right." in answers  # box on the image's left = the patient's right
    assert any(a.startswith(("Yes", "No")) for a in answers)
    covid_answers = {turn("vqa", covid(), seed=s).answer for s in range(60)}
    assert {"7", "A: 1, B: 2, C: 0, D: 0, E: 3, F: 1", "3.2"} <= covid_answers
    lateral = effusion()
    lateral.view_position = "LATERAL"
    assert "Right." not in {turn("vqa", lateral, seed=s).answer for s in range(40)}


def test_conversation_puts_the_image_first_only():
    config = InstructionConfig(tasks=("conversation", "reason", "classify", "vqa"), mix={"conversation": 1})
    (row,) = record_examples(effusion(), config, TEMPLATES)
    assert row["task"] == "conversation" and row["turns"] >= 2
    users = [m for m in row["messages"] if m["role"] == "user"]
    assert users[0]["content"][0] == {"type": "image", "text": None}
    assert all(part["type"] == "text" for m in users[1:] for part in m["content"])
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * row["turns"]


# ---------------------------------------------------------------- datasets


def manifest(tmp_path):
    records = [effusion(), normal(), covid(), reported(), rec("txt", image=None, root=None)]
    records += [rec(f"v{i}", split="val", labels=normal_labels()) for i in range(3)]
    records += [rec("t", split="test", labels=normal_labels())]
    path = tmp_path / "m.jsonl"
    write_manifest(records, path)
    return path


def load(folder):
    datasets = pytest.importorskip("datasets")  # the `train` extra

    return datasets.load_dataset("json", data_files={s: str(folder / f"{s}.jsonl") for s in ("train", "val")})


def test_sft_dataset_schema(tmp_path):
    from cxrlm.data.manifest import read_manifest

    config = InstructionConfig(per_image=4, seed=3)
    stats = write_instructions(read_manifest(manifest(tmp_path)), tmp_path / "sft", config)
    ds = load(tmp_path / "sft")
    assert ds["train"].num_rows == sum(stats.examples["train"].values()) == 16
    assert ds["val"].num_rows == 12 and stats.skipped == {"no image (text-only record)": 1}
    features = ds["train"].features
    assert set(features) == {"id", "task", "turns", "template_version", "synthetic", "dataset", "study_id",
                             "split", "images", "messages"}
    messages = features["messages"]
    messages = messages.feature if hasattr(messages, "feature") else messages[0]  # datasets >= 4 / 3
    content = messages["content"].feature if hasattr(messages["content"], "feature") else messages["content"][0]
    assert set(content) == {"type", "text"}  # one struct type, not free JSON
    for row in ds["train"]:
        assert row["task"] in TASKS and row["template_version"] == TEMPLATES["version"]
        assert row["messages"][0]["content"][0]["type"] == "image" and row["messages"][-1]["role"] == "assistant"
        assert row["images"][0].startswith("/data/images/")
        if row["task"] == "reason":
            assert row["synthetic"]
    info = json.loads((tmp_path / "sft" / "info.json").read_text())
    assert info["template_version"] == TEMPLATES["version"] and info["parser_box_format"] == "pixels"


def test_grpo_dataset_schema(tmp_path):
    from cxrlm.data.manifest import read_manifest

    config = InstructionConfig(format="grpo", per_image=6, box_format="int100",
                               tasks=("reason", "report", "ground", "vqa", "conversation"))
    write_instructions(read_manifest(manifest(tmp_path)), tmp_path / "grpo", config)
    train = load(tmp_path / "grpo")["train"]
    assert {"prompt", "images", "task", "labels", "boxes", "report", "answer", "image_size"} <= set(train.features)
    assert set(train["box_format"]) == {"int100"}  # the box rewards read the answers in it
    assert "messages" not in train.features
    for row in train:
        assert row["prompt"][-1]["role"] == "user" and row["task"] != "conversation"
        if row["task"] == "reason":
            assert row["labels"] and row["answer"] == ", ".join(row["labels"])
        if row["task"] == "ground":
            assert row["boxes"] and row["answer"].startswith("[") and row["image_size"] == [200, 100]
        if row["task"] == "report":
            assert row["report"] == row["answer"]
    assert {"reason", "ground", "report"} <= set(train["task"])


def test_build_is_deterministic_and_order_free():
    records = [effusion(), normal(), covid(), reported()]
    config = InstructionConfig(per_image=3, seed=5)
    first, _ = build_instructions(records, config)
    again, _ = build_instructions(list(reversed(records)), config)
    key = lambda rows: sorted(json.dumps(r, sort_keys=True) for r in rows["train"])
    assert key(first) == key(again)
    other, _ = build_instructions(records, InstructionConfig(per_image=3, seed=6))
    assert key(first) != key(other)


def test_mixture_follows_weights():
    records = [effusion() for _ in range(1)]
    config = InstructionConfig(tasks=("reason", "classify"), mix={"reason": 9, "classify": 1}, per_image=300)
    _, stats = build_instructions(records, config)
    assert 240 < stats.examples["train"]["reason"] < 295


def test_test_split_is_held_out_unless_asked():
    records = [rec("t", split="test", labels=normal_labels())]
    assert build_instructions(records, InstructionConfig())[0] == {"train": [], "val": []}
    rows, _ = build_instructions(records, InstructionConfig(splits=("test",)))
    assert len(rows["test"]) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ("reason", "dance")}, "unknown task 'dance'"),
    ({"tasks": ()}, "--tasks is empty"),
    ({"format": "dpo"}, "--format"),
    ({"box_format": "xywh"}, "--box-format"),
    ({"mix": {"reason": -1}}, "--mix"),
    ({"tasks": ("reason",), "mix": {"reason": 0}}, "--mix"),
    ({"uncertain": "maybe"}, "--uncertain"),
    ({"per_image": 0}, "--per-image"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        InstructionConfig(**kwargs)


def test_parse_mix():
    assert parse_mix("reason=5, vqa=0")["reason"] == 5 and parse_mix("reason=5")["classify"] == 2
    for bad in ("reason", "reason=lots"):
        with pytest.raises(ConfigError, match="task=weight"):
            parse_mix(bad)


def test_templates_cover_every_label():
    for name in CHEXPERT14[1:]:
        assert name in TEMPLATES["finding_phrases"]
        assert set(TEMPLATES["sentences"][name]) == {"positive", "uncertain", "negative"}
    labelled = {n for region in TEMPLATES["review"]["regions"] for n in region["labels"]}
    assert labelled == set(CHEXPERT14[1:])


def test_shared_data_instructions(shared_data, tmp_path):
    from cxrlm.data.sources import build_records

    records = list(build_records("covid-chestxray", shared_data / "covid-chestxray"))
    rows, stats = build_instructions(records, InstructionConfig(per_image=2))
    train = rows["train"]
    assert stats.examples["train"]["ground"] > 0 and stats.examples["train"]["vqa"] > 0
    ground = [r for r in train if r["task"] == "ground"]
    assert all("lung" in r["messages"][0]["content"][1]["text"] for r in ground)
    assert stats.skipped["no task fits its labels/boxes"] < 69  # `todo` images still get box tasks
