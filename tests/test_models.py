import json
import os

import jsonschema
import pytest
from scripted_engine import ScriptedEngine

from cxrlm.errors import ModelLoadError
from cxrlm.models import load_model
from cxrlm.models.base import CxrModel
from cxrlm.models.profiles import PROFILES, resolve_profile
from cxrlm.pathologies import CLASSIFY_LABELS
from cxrlm.types import output_schema


def test_checkpoint_has_the_layout_of_a_real_qwen2_5_vl_folder(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert resolve_profile(tiny_checkpoint).name == "nv-reason-cxr"


def test_save_load_round_trip_generates_the_same_tokens(tiny_model, tiny_checkpoint, xray, tmp_path):
    first = tiny_model.predict(xray, "reason", max_new_tokens=8)
    tiny_model.engine.model.save_pretrained(tmp_path)
    tiny_model.engine.processor.save_pretrained(tmp_path)
    again = load_model(tmp_path, device="cpu").predict(xray, "reason", max_new_tokens=8)
    assert first.raw_text == again.raw_text
    assert first.timings.new_tokens == 8


@pytest.mark.parametrize("task", ["reason", "report", "ground", "classify"])
def test_every_task_returns_schema_valid_output(tiny_model, xray, task):
    out = tiny_model.predict(xray, task, phrase="right lung", max_new_tokens=6)
    jsonschema.validate(json.loads(out.to_json()), output_schema())
    assert out.image_size == (240, 300) and out.model == "tiny-qwen2_5_vl"


def test_classify_gives_a_probability_per_label(tiny_model, xray):
    out = tiny_model.predict(xray, "classify")
    assert list(out.probabilities) == list(CLASSIFY_LABELS)
    assert all(0.0 <= p <= 1.0 for p in out.probabilities.values())
    assert len(set(out.probabilities.values())) > 1  # the question really differs per label


class CountingEngine:
    """The tiny model's engine, counting the yes/no questions it is asked."""

    def __init__(self, engine):
        self.engine, self.questions = engine, []

    def yes_probability(self, conversations, images):
        self.questions += [c[-1]["content"][-1]["text"] for c in conversations]
        return self.engine.yes_probability(conversations, images)


def test_one_probability_per_finding_whichever_vocabulary_names_it(tiny_model, xray):
    from cxrlm.pathologies import finding

    counting = CxrModel("tiny", tiny_model.profile, CountingEngine(tiny_model.engine))
    out = counting.predict(xray, "classify", labels=("Effusion", "Pleural Effusion", "Atelectasis"))
    assert out.probabilities["Effusion"] == out.probabilities["Pleural Effusion"] != out.probabilities["Atelectasis"]
    assert len(counting.engine.questions) == 2 and "pleural effusion" in counting.engine.questions[0]
    assert out.to_dict()["vocabularies"] == {"Effusion": ["nih14"], "Pleural Effusion": ["chexpert14"],
                                             "Atelectasis": ["chexpert14", "nih14"]}
    counting.engine.questions = []
    everything = counting.predict(xray, "classify")
    assert list(everything.probabilities) == list(CLASSIFY_LABELS)
    assert len(counting.engine.questions) == len({finding(name) for name in CLASSIFY_LABELS}) == 21
    assert everything.probabilities["Effusion"] == everything.probabilities["Pleural Effusion"]
    jsonschema.validate(json.loads(everything.to_json()), output_schema())


def test_streaming_pieces_add_up_to_the_answer(tiny_model, xray):
    pieces = []
    out = tiny_model.predict(xray, "reason", max_new_tokens=10, on_text=pieces.append)
    assert "".join(pieces).strip() == out.raw_text.strip()


def test_nv_reason_output_is_structured(xray):
    text = ('<think>Right base opacity.</think><answer>Pneumonia, Cardiomegally, fish</answer> '
            '{"bbox_2d": [140, 168, 280, 336], "label": "pneumonia"}')
    # Stands in for a trained model: fixed text, as if the model saw a 280x336 input.
    model = CxrModel("scripted", PROFILES["nv-reason-cxr"], ScriptedEngine(text, input_size=(280, 336)))
    out = model.predict(xray, "reason")
    assert out.reasoning == "Right base opacity."
    assert [label.name for label in out.labels] == ["Pneumonia", "Cardiomegaly"]
    assert any("fish" in w for w in out.warnings)
    # A box at the lower-right quarter of the 280x336 model input is the lower-right quarter of the 240x300 image.
    (box,) = out.boxes
    assert box.label == "pneumonia" and box.xyxy == (120.0, 150.0, 240.0, 300.0)


def test_chat_sends_the_image_once_and_keeps_history(xray):
    from cxrlm.chat import Session

    engine = ScriptedEngine("<think>ok</think><answer>Edema</answer>")
    session = Session(CxrModel("scripted", PROFILES["nv-reason-cxr"], engine), xray)
    session.reason()
    session.ask("Provide differentials.")
    last = engine.calls[-1]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]
    images = [part for m in last for part in m["content"] if part["type"] == "image"]
    assert len(images) == 1 and last[0]["content"][0]["type"] == "image"
    with pytest.raises(ValueError):
        session.ask("   ")


def test_unsupported_family_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="unsupported model family 'bert'"):
        load_model(tmp_path, device="cpu")


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope", device="cpu")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path, device="cpu")


def test_config_without_weights_is_a_one_line_error(tiny_checkpoint, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "processor_config.json"):
        (tmp_path / name).write_bytes((tiny_checkpoint / name).read_bytes())
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path, device="cpu")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    tmp_path.chmod(0)
    try:
        with pytest.raises(ModelLoadError, match="not readable"):
            load_model(tmp_path, device="cpu")
    finally:
        tmp_path.chmod(0o755)


def test_cxrlm_json_overrides_the_profile(tiny_checkpoint, tmp_path):
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    (tmp_path / "cxrlm.json").write_text(json.dumps({"profile": "nv-reason-cxr", "box_format": "norm1"}))
    assert resolve_profile(tmp_path).box_format == "norm1"
    (tmp_path / "cxrlm.json").write_text(json.dumps({"profile": "nope"}))
    with pytest.raises(ModelLoadError, match="unknown profile"):
        resolve_profile(tmp_path)
    (tmp_path / "cxrlm.json").write_text("{bad")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        resolve_profile(tmp_path)
