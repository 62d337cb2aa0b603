"""SFT end to end on a tiny random checkpoint on CPU: steps run, loss is finite and logged, the saved folder
reloads with `cxrlm.models.load_model` and answers; LoRA merges; resume continues; user errors are one line."""

import json
import math

import pytest
from train_samples import write_sft

from cxrlm.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(monkeypatch):
    import cxrlm.cli

    from cxrlm.cli import train as verb
    monkeypatch.setattr(cxrlm.cli, "verb_modules", lambda: (verb,))
    return cxrlm.cli.main


def log_history(out) -> list[dict]:
    (state,) = sorted(out.glob("checkpoint-*/trainer_state.json"))[-1:]
    return json.loads(state.read_text())["log_history"]


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def changed(before: dict, after: dict) -> bool:
    return any(not (before[k] == after[k]).all() for k in before)


def test_sft_full_fine_tuning_trains_saves_reloads_and_resumes(tiny_checkpoint, tmp_path, cli, capsys, xray):
    from cxrlm.models import load_model

    data, out = write_sft(tmp_path), tmp_path / "run"
    args = ["train", "sft", f"model={tiny_checkpoint}", f"train_file={data}", f"output_dir={out}", "max_steps=2",
            "per_device_train_batch_size=2", "learning_rate=1e-3", "save_steps=1"]
    assert cli(args) == 0
    printed = capsys.readouterr().out
    assert "step 2/2" in printed and "samples/s" in printed and "ETA" in printed
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert changed(weights(tiny_checkpoint), weights(out))

    output = load_model(out, device="cpu").predict(xray, "reason", max_new_tokens=8)
    assert output.task == "reason" and output.raw_text is not None

    resume = args[:-4] + ["resume_from_checkpoint=true", "per_device_train_batch_size=2", "learning_rate=1e-3"]
    # Resumed at its last step, a run trains nothing, so it must save the checkpoint's own weights (transformers
    # alone restarted a full fine-tune of a VLM from the base weights: huggingface/transformers#43701).
    assert cli(resume + ["max_steps=2"]) == 0
    after, checkpoint = weights(out), weights(out / "checkpoint-2")
    assert after.keys() == checkpoint.keys() and not changed(checkpoint, after)

    assert cli(resume + ["max_steps=3"]) == 0
    steps = [h["step"] for h in log_history(out) if "loss" in h]
    assert steps == [1, 2, 3]  # steps 1-2 came from the checkpoint; only step 3 ran again
    assert "step 3/3" in capsys.readouterr().out


def test_sft_lora_saves_adapter_and_merged_weights(tiny_checkpoint, tmp_path, xray):
    from cxrlm.models import load_model
    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe, load_recipe

    out = tmp_path / "lora"
    recipe = load_recipe(None, SFTRecipe, [f"model={tiny_checkpoint}", f"train_file={write_sft(tmp_path, n=2)}",
                                           f"output_dir={out}", "max_steps=2", "use_peft=true", "lora_r=4",
                                           "learning_rate=1e-2", "freeze_vision=true"])
    assert sft.main(recipe) == out
    assert (out / "adapter" / "adapter_config.json").is_file()
    after = weights(out)
    assert not any("lora" in key for key in after)  # merged: a plain checkpoint
    assert changed(weights(tiny_checkpoint), after)
    assert load_model(out, device="cpu").predict(xray, "reason", max_new_tokens=4).task == "reason"


def test_resume_without_checkpoint_is_a_one_line_error(tiny_checkpoint, tmp_path, cli, capsys):
    args = ["train", "sft", f"model={tiny_checkpoint}", f"train_file={write_sft(tmp_path, n=1)}",
            f"output_dir={tmp_path / 'empty'}", "max_steps=1", "resume_from_checkpoint=true"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume") and err.count("\n") == 1


def test_qlora_is_refused_without_a_gpu(tiny_checkpoint, tmp_path):
    import torch

    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe, load_recipe

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: QLoRA is allowed")
    recipe = load_recipe(None, SFTRecipe, [f"model={tiny_checkpoint}", f"train_file={write_sft(tmp_path, n=1)}",
                                           f"output_dir={tmp_path}", "use_peft=true", "load_in_4bit=true"])
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        sft.main(recipe)


def test_model_folder_must_be_a_checkpoint(tmp_path):
    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe, load_recipe

    recipe = load_recipe(None, SFTRecipe, [f"model={tmp_path}", f"train_file={write_sft(tmp_path, n=1)}",
                                           f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        sft.main(recipe)
