"""Every supported family behind the one output schema: tiny random checkpoints built here, and scripted engines
for the dialects' parsing (random weights never write a box)."""

import json

import jsonschema
import pytest
from scripted_engine import ScriptedEngine

from cxrlm.chat import Session
from cxrlm.errors import ModelLoadError
from cxrlm.models import load_model
from cxrlm.models.base import CxrModel
from cxrlm.models.families import FAMILIES
from cxrlm.models.profiles import PROFILES, ModelProfile, resolve_profile
from cxrlm.models.remote_code import IMAGE_TEXT, flatten
from cxrlm.pathologies import CLASSIFY_LABELS
from cxrlm.types import output_schema

FAMILIES_TO_PROFILES = {"llava_onevision": "radvlm", "gemma3": "medgemma", "qwen3_vl": "qwen3-vl"}
TASKS = ("reason", "report", "classify", "ground")


@pytest.fixture(scope="module")
def family_checkpoints(tmp_path_factory):
    from cxrlm.models.families import FAMILIES

    root = tmp_path_factory.mktemp("families")
    folders = {name: FAMILIES[name].build_tiny(root / f"tiny-{name}") for name in FAMILIES_TO_PROFILES}
    # A small Qwen3-VL pixel budget keeps the test fast; cxrlm.json is the documented way to set it.
    (folders["qwen3_vl"] / "cxrlm.json").write_text(json.dumps({"min_pixels": 64 * 64, "max_pixels": 128 * 128}))
    return folders


@pytest.fixture(scope="module")
def family_models(family_checkpoints):
    return {name: load_model(folder, device="cpu") for name, folder in family_checkpoints.items()}


@pytest.mark.parametrize("family", FAMILIES_TO_PROFILES)
def test_checkpoint_has_the_family_layout_and_profile(family_checkpoints, family):
    folder = family_checkpoints[family]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == family
    assert {"model.safetensors", "tokenizer.json", "processor_config.json"} <= {p.name for p in folder.iterdir()}
    assert resolve_profile(folder).name == FAMILIES_TO_PROFILES[family]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES_TO_PROFILES)
def test_every_family_and_task_returns_schema_valid_output(family_models, xray, family, task):
    out = family_models[family].predict(xray, task, phrase="right lung", max_new_tokens=4)
    jsonschema.validate(json.loads(out.to_json()), output_schema())
    assert out.task == task and out.image_size == (240, 300) and out.model == f"tiny-{family}"
    if task == "classify":
        assert list(out.probabilities) == list(CLASSIFY_LABELS)
        assert len(set(out.probabilities.values())) > 1  # the question really differs per label
    else:
        assert out.timings.new_tokens >= 1


def test_medgemma_prompt_carries_the_system_prompt_in_the_first_user_turn(family_models):
    model = family_models["gemma3"]
    messages = model._with_system([model.adapter.user_turn("Describe this X-ray.", 1)])
    text = model.engine.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.index("You are an expert radiologist.") < text.index("Describe this X-ray.")
    assert text.count("<start_of_turn>user") == 1 and text.endswith("<start_of_turn>model\n")


@pytest.mark.parametrize("family", ["llava_onevision", "gemma3"])
def test_follow_up_turns_send_the_image_once_through_the_real_processor(family_models, xray, family):
    session = Session(family_models[family], xray, max_new_tokens=3)
    session.reason()
    out = session.ask("Write a radiology report for this Chest X-ray.")
    assert [m.n_images for m in session.history if m.role == "user"] == [1, 0]
    jsonschema.validate(json.loads(out.to_json()), output_schema())


def scripted(profile: str, *texts) -> CxrModel:
    return CxrModel("scripted", PROFILES[profile], ScriptedEngine(*texts))


def test_radvlm_sentence_answer_gives_labels_without_tag_warnings(xray):
    out = scripted("radvlm", "The following abnormalities are present: cardiomegaly and pleural effusion.").predict(
        xray, "reason")
    assert [label.name for label in out.labels] == ["Cardiomegaly", "Pleural Effusion"]
    assert not out.warnings and out.reasoning is None


def test_radvlm_two_decimal_boxes_are_fractions_of_the_original_image(xray):
    model = scripted("radvlm", "This finding is located at [0.12, 0.30, 0.45, 0.80] and [0.5, 0.5, 0.75, 1.0].")
    out = model.predict(xray, "ground", phrase="left effusion")
    assert [b.xyxy for b in out.boxes] == [(28.8, 90.0, 108.0, 240.0), (120.0, 150.0, 180.0, 300.0)]
    assert {b.label for b in out.boxes} == {"left effusion"}
    first_turn = model.engine.calls[0][0]["content"]
    assert first_turn[0] == {"type": "image"} and "Please locate the following sentence" in first_turn[1]["text"]


def test_medgemma_scripted_turns_start_with_its_system_prompt(xray):
    model = scripted("medgemma", "No acute findings.", "Findings: Clear lungs.\nImpression: Normal.")
    out = model.predict(xray, "report")  # the reasoning turn, then the report turn
    assert (out.findings, out.impression) == ("Clear lungs.", "Normal.")
    assert model.engine.calls[0][0]["content"][0]["text"] == "You are an expert radiologist."


def test_qwen3_vl_boxes_are_thousandths(xray):
    out = scripted("qwen3-vl", '[{"bbox_2d": [500, 500, 1000, 1000], "label": "right lung"}]').predict(
        xray, "ground", phrase="right lung")
    (box,) = out.boxes
    assert box.xyxy == (120.0, 150.0, 240.0, 300.0) and box.label == "right lung"


def test_medgemma_1_5_boxes_are_y_first_thousandths(xray, tmp_path):
    """MedGemma 1.5's fenced {"box_2d": [y0, x0, y1, x1]} answer, picked by cxrlm.json on a Gemma 3 folder."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    (tmp_path / "cxrlm.json").write_text(json.dumps({"profile": "medgemma-1.5"}))
    assert resolve_profile(tmp_path).box_format == "int1000_yxyx"
    answer = 'Final Answer: ```json\n[{"box_2d": [500, 0, 1000, 500], "label": "right lung"}]\n```'
    model = scripted("medgemma-1.5", answer)
    (box,) = model.predict(xray, "ground", phrase="right lung").boxes
    assert box.xyxy == (0.0, 150.0, 120.0, 300.0) and box.label == "right lung"
    asked = " ".join(part.get("text") or "" for part in model.engine.calls[0][-1]["content"])
    assert "[y0, x0, y1, x1]" in asked and "[0, 1000]" in asked


def test_m4cxr_report_is_a_two_turn_chain_of_thought(xray):
    model = scripted("m4cxr", "Cardiomegaly, Pleural Effusion.", "The heart is enlarged. Small left effusion.")
    out = model.predict(xray, "report")
    first, second = model.engine.calls
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert first[0]["content"][0] == {"type": "image"}
    assert not any(part["type"] == "image" for part in second[2]["content"])
    assert "Which of the following findings are present" in first[0]["content"][1]["text"]
    assert out.reasoning == "Cardiomegaly, Pleural Effusion."
    assert [label.name for label in out.labels] == ["Cardiomegaly", "Pleural Effusion"]
    assert out.findings == "The heart is enlarged. Small left effusion." and out.timings.new_tokens == 10


def test_m4cxr_boxes_are_hundredths(xray):
    out = scripted("m4cxr", "Yes. [50, 10, 100, 60].").predict(xray, "ground", phrase="cardiomegaly")
    assert [b.xyxy for b in out.boxes] == [(120.0, 30.0, 240.0, 180.0)]


def test_remote_code_turns_are_flattened_with_the_image_text():
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is edema present?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
        {"role": "user", "content": "Why?"},
    ]
    flat = flatten(messages, IMAGE_TEXT["m4cxr"])
    assert flat[0] == {"role": "user", "content": "radiology image: <image> Is edema present?"}
    assert flat[1:] == [{"role": "assistant", "content": "No."}, {"role": "user", "content": "Why?"}]


def _remote_folder(tmp_path):
    config = {"model_type": "m4cxr_llm", "auto_map": {"AutoModelForCausalLM": "modeling_m4cxr.M4CXR"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_remote_code_is_refused_without_the_opt_in(tmp_path, capsys):
    folder = _remote_folder(tmp_path)
    assert resolve_profile(folder).name == "m4cxr"
    with pytest.raises(ModelLoadError, match="trust-remote-code") as err:
        load_model(folder, device="cpu")
    assert "\n" not in str(err.value)
    assert "WARNING" not in capsys.readouterr().err


def test_remote_code_opt_in_warns_loudly_and_fails_cleanly_without_code(tmp_path, capsys):
    with pytest.raises(ModelLoadError, match="cannot load the checkpoint") as err:
        load_model(_remote_folder(tmp_path), device="cpu", trust_remote_code=True)
    assert "\n" not in str(err.value)
    assert "WARNING: trust_remote_code is on" in capsys.readouterr().err


def test_unknown_family_without_code_is_still_unsupported_and_m4cxr_needs_auto_map(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "m4cxr_llm"}))
    with pytest.raises(ModelLoadError, match="unsupported model family"):
        resolve_profile(tmp_path)
    (tmp_path / "cxrlm.json").write_text(json.dumps({"profile": "m4cxr"}))
    with pytest.raises(ModelLoadError, match="no auto_map"):
        resolve_profile(tmp_path)


def test_bad_box_format_or_frame_in_cxrlm_json_is_a_one_line_error(family_checkpoints, tmp_path):
    (tmp_path / "config.json").write_text((family_checkpoints["gemma3"] / "config.json").read_text())
    for field, value in (("box_format", "int10"), ("box_frame", "letterbox")):
        (tmp_path / "cxrlm.json").write_text(json.dumps({field: value}))
        with pytest.raises(ModelLoadError, match=f"bad field.*{field}"):
            resolve_profile(tmp_path)


def test_known_family_with_auto_map_uses_the_built_in_adapter(family_checkpoints, tmp_path):
    config = json.loads((family_checkpoints["gemma3"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "x.Y"}}))
    profile = resolve_profile(tmp_path)
    assert profile.name == "medgemma" and not profile.remote_code


def test_qwen3_vl_prompt_has_no_default_system_message(family_models):
    model = family_models["qwen3_vl"]
    text = model.engine.processor.apply_chat_template([model.adapter.user_turn("Hi", 1)],
                                                      add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi")


@pytest.mark.parametrize("family", FAMILIES_TO_PROFILES)
def test_every_family_runs_every_verb_through_the_cli(family_checkpoints, family, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from cxrlm.cli import main

    image = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (200, 160), dtype=np.uint8)).save(image)
    model = str(family_checkpoints[family])
    for verb, extra in (("report", []), ("classify", []), ("ground", ["left lung"])):
        assert main([verb, str(image), *extra, "--model", model, "--json", "--max-new-tokens", "3"]) == 0
        out = json.loads(capsys.readouterr().out)
        jsonschema.validate(out, output_schema())
        assert out["task"] == verb and out["model"] == f"tiny-{family}"


def test_chexone_modes_ask_its_published_questions(xray):
    instruct = scripted("chexone-instruct", "The lungs are clear.")
    instruct.predict(xray, "report")  # a report is the reasoning turn, then the report question
    assert instruct.engine.calls[-1][-1]["content"][-1]["text"] == "Write an example findings section for the CXR."
    reasoning = scripted("chexone", "Clear lungs. \\boxed{No acute process.}")
    out = reasoning.predict(xray, "report")
    assert reasoning.engine.calls[-1][-1]["content"][-1]["text"] == (
        "Write an example findings section for the CXR. Please reason step by step, and put your final answer "
        "within \\boxed{{}}.")
    assert (out.answer, out.findings) == ("No acute process.", "No acute process.")  # \boxed{} is the answer
    assert out.reasoning.startswith("Clear lungs.") and "\\boxed" not in out.reasoning
    labels = scripted("chexone", "The heart is large; fluid at the base. \\boxed{Cardiomegaly, pleural effusion}")
    out = labels.predict(xray, "reason")
    assert [label.name for label in out.labels] == ["Cardiomegaly", "Pleural Effusion"] and not out.warnings
    grounding = scripted("chexone", "<|ref|>effusion<|/ref|><|box|>(12,60),(18,87)<|/box|>")
    grounding.predict(xray, "ground", phrase="effusion")
    asked = grounding.engine.calls[0][0]["content"][1]["text"]
    assert asked.startswith("Locate effusion in the CXR.") and "<|box|>(x1,y1),(x2,y2)<|/box|>" in asked
    # 0-100 corner points of the 240 x 300 image, each named by the <|ref|> before it
    two = scripted("chexone", "<|ref|>effusion<|/ref|><|box|>(12,60),(18,87)<|/box|>"
                              "<|ref|>right lung<|/ref|><|box|>(50,10),(90,80)<|/box|>")
    out = two.predict(xray, "ground", phrase="lungs")
    assert [(b.label, b.xyxy) for b in out.boxes] == [("effusion", (28.8, 180.0, 43.2, 261.0)),
                                                      ("right lung", (120.0, 30.0, 216.0, 240.0))]


def test_newer_qwen2_5_vl_models_are_chosen_by_name_in_cxrlm_json(tiny_checkpoint, tmp_path):
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    assert resolve_profile(tmp_path).name == "nv-reason-cxr"  # the model_type alone keeps its default
    for name, dialect in (("chexone", "chexone-reasoning"), ("chexone-instruct", "chexone-instruct"),
                          ("lingshu", "lingshu")):
        (tmp_path / "cxrlm.json").write_text(json.dumps({"profile": name}))
        profile = resolve_profile(tmp_path)
        assert (profile.name, profile.family, profile.dialect) == (name, "qwen2_5_vl", dialect)


def test_a_profile_names_a_registered_family(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="family 'qwen9'"):
        ModelProfile("x", "qwen9", ("x",), "nv-reason", "pixels")
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    (tmp_path / "cxrlm.json").write_text(json.dumps({"family": "qwen9"}))
    with pytest.raises(ModelLoadError, match="bad field.*family 'qwen9' is not one of qwen2_5_vl"):
        resolve_profile(tmp_path)


def test_every_profile_points_to_a_family_record_and_dialect():
    from cxrlm.prompts.templates import DIALECTS

    for profile in PROFILES.values():
        assert FAMILIES[profile.family].name == profile.family and profile.dialect in DIALECTS


def test_training_rows_are_laid_out_in_the_family_order():
    row = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Q"}]},
           {"role": "assistant", "content": [{"type": "text", "text": "A"}]}]
    assert FAMILIES["gemma3"].lay_out(row)[0]["content"] == [{"type": "text", "text": "Q"},
                                                              {"type": "image", "text": None}]
    assert FAMILIES["llava_onevision"].lay_out(row) == row
    assert FAMILIES["gemma3"].user_turn("Q", 1) == {"role": "user", "content": [{"type": "text", "text": "Q"},
                                                                                {"type": "image"}]}


def test_cli_tiny_choices_are_the_families_with_a_tiny_builder():
    from cxrlm.cli.models import TINY_FAMILIES

    assert set(TINY_FAMILIES) == {name for name, family in FAMILIES.items() if family.build_tiny}
