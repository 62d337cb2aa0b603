"""`cxrlm train sft` and `cxrlm train grpo` on a tiny random checkpoint of every family, full and LoRA: the steps
run with finite losses, LoRA adapts the language model only, freeze_vision keeps the family's vision tower fixed,
and the fine-tuned folder answers through `cxrlm report`. Qwen2.5-VL's SFT (full, LoRA) and full GRPO runs are in
test_train_sft.py and test_train_grpo.py; here it gets the LoRA GRPO run."""

import json
import math

import pytest
from train_samples import write_grpo, write_png, write_sft

from cxrlm.errors import ConfigError
from cxrlm.models.families import FAMILIES

pytestmark = pytest.mark.slow

OTHER_FAMILIES = ("qwen3_vl", "llava_onevision", "gemma3")
RUNS = [(family, method, peft) for family in OTHER_FAMILIES for method in ("sft", "grpo") for peft in (False, True)]
RUNS.append(("qwen2_5_vl", "grpo", True))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("train-families")
    return {"qwen2_5_vl": tiny_checkpoint, **{name: FAMILIES[name].build_tiny(root / name) for name in OTHER_FAMILIES}}


def tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def losses(out) -> list[float]:
    (state,) = out.glob("checkpoint-*/trainer_state.json")
    return [h["loss"] for h in json.loads(state.read_text())["log_history"] if "loss" in h]


@pytest.mark.parametrize("family,method,peft", RUNS)
def test_every_family_fine_tunes_and_reports(checkpoints, family, method, peft, tmp_path, capsys):
    from cxrlm.cli import main

    base, out = checkpoints[family], tmp_path / "run"
    common = [f"model={base}", f"output_dir={out}", "max_steps=2", "max_pixels=12544", "save_steps=2"]
    if method == "sft":
        args = [f"train_file={write_sft(tmp_path, n=2)}", "learning_rate=1e-2"]
    else:
        args = [f"train_file={write_grpo(tmp_path, n=2, size=(64, 64))}", "per_device_train_batch_size=2",
                "num_generations=2", "max_completion_length=6", "learning_rate=1e-3"]
    # Full runs freeze the vision tower, so the test sees the family's tower found (unchanged) and the rest trained.
    args += ["use_peft=true", "lora_r=4"] if peft else ["freeze_vision=true"]
    assert main(["train", method, *common, *args]) == 0
    assert f"saved {method} checkpoint" in capsys.readouterr().out
    assert len(losses(out)) == 2 and all(math.isfinite(v) for v in losses(out))

    before, after = tensors(base / "model.safetensors"), tensors(out / "model.safetensors")
    assert before.keys() == after.keys()  # LoRA merged back into a plain checkpoint of the family
    tower = FAMILIES[family].vision_tower.removeprefix("model.")
    assert any(tower in key for key in before)
    changed = {key for key in before if not (before[key] == after[key]).all()}
    assert not any(tower in key for key in changed)
    projector = (FAMILIES[family].projector or "").removeprefix("model.")
    if method == "sft":  # random GRPO groups can tie (zero advantage, no update); SFT always moves
        assert changed
        if projector and not peft:  # freeze_vision keeps the tower, not the projector after it
            assert any(projector in key for key in changed)
    if peft:
        adapted = tensors(out / "adapter" / "adapter_model.safetensors")
        assert adapted and all(".language_model.layers." in key for key in adapted)

    image = write_png(tmp_path / "cxr.png", 7, size=(80, 96))
    assert main(["report", str(tmp_path / image), "--model", str(out), "--json", "--max-new-tokens", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "report" and report["model"] == "run"


def test_cache_vision_is_refused_for_a_tower_it_cannot_key(checkpoints, tmp_path):
    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe, load_recipe

    recipe = load_recipe(None, SFTRecipe, [f"model={checkpoints['gemma3']}", f"train_file={write_sft(tmp_path, n=1)}",
                                           f"output_dir={tmp_path / 'o'}", "freeze_vision=true", "cache_vision=true"])
    with pytest.raises(ConfigError, match="cache_vision works with Qwen2.5-VL"):
        sft.main(recipe)


def test_a_remote_code_checkpoint_is_not_trained(tmp_path):
    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe, load_recipe

    config = {"model_type": "m4cxr_llm", "auto_map": {"AutoModelForCausalLM": "modeling_m4cxr.M4CXR"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    recipe = load_recipe(None, SFTRecipe, [f"model={tmp_path}", f"train_file={write_sft(tmp_path, n=1)}",
                                           f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="built-in families only"):
        sft.main(recipe)


def test_a_template_trl_cannot_mark_asks_to_drop_assistant_only_loss(checkpoints, tmp_path):
    """RadVLM's real LLaVA-OneVision template has no {% generation %} markers and TRL 1.16 has no training variant
    of it: SFT says what to do in one line."""
    import shutil

    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe, load_recipe

    folder = shutil.copytree(checkpoints["llava_onevision"], tmp_path / "radvlm-like")
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text().replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    recipe = load_recipe(None, SFTRecipe, [f"model={folder}", f"train_file={write_sft(tmp_path, n=1)}",
                                           f"output_dir={tmp_path / 'o'}", "max_steps=1"])
    with pytest.raises(ConfigError, match="not training-compatible.*or set assistant_only_loss=false") as err:
        sft.main(recipe)
    assert "\n" not in str(err.value)
