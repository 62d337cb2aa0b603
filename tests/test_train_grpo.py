"""GRPO end to end on a tiny random checkpoint on CPU: a mixed-task batch (reason, ground, report) scored by the
reward library, loss and rewards finite and logged, the saved folder reloads and answers; bad setups are one line."""

import json
import math

import pytest
from train_samples import write_grpo

from cxrlm.errors import ConfigError

pytestmark = pytest.mark.slow

REWARDS = ["format", "tag_count", "label_f1", "box_iou", "report_ce_f1", "length", "repetition"]


def recipe(tiny_checkpoint, tmp_path, *extra):
    from cxrlm.train.config import GRPORecipe, load_recipe

    return load_recipe(None, GRPORecipe, [
        f"model={tiny_checkpoint}", f"train_file={write_grpo(tmp_path, n=4)}", f"output_dir={tmp_path / 'run'}",
        "max_steps=2", "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=8",
        "learning_rate=1e-4", f"rewards=[{', '.join(REWARDS)}]", "reward_kwargs={length: {min_length: 2}}", *extra,
    ])


def test_grpo_mixed_tasks_trains_logs_rewards_and_reloads(tiny_checkpoint, tmp_path, capsys, xray):
    from cxrlm.models import load_model
    from cxrlm.train import grpo

    out = grpo.main(recipe(tiny_checkpoint, tmp_path))
    (state,) = out.glob("checkpoint-*/trainer_state.json")
    steps = [h for h in json.loads(state.read_text())["log_history"] if "loss" in h]
    assert len(steps) == 2
    for step in steps:
        assert math.isfinite(step["loss"]) and math.isfinite(step["reward"])
        means = {name: step[f"rewards/{name}/mean"] for name in REWARDS}
        # format is scored on every row; task-specific rewards only where their task is in the batch (else None)
        assert means["format"] is not None and math.isfinite(means["format"])
        assert all(v is None or math.isfinite(v) for v in means.values())
        assert sum(means[name] is not None for name in ("label_f1", "box_iou", "report_ce_f1")) >= 1
    assert "rewards/format/mean" in capsys.readouterr().out
    output = load_model(out, device="cpu").predict(xray, "reason", max_new_tokens=8)
    assert output.task == "reason"


def test_group_size_must_divide_the_batch(tiny_checkpoint, tmp_path):
    from cxrlm.train import grpo

    with pytest.raises(ConfigError, match="GRPO setup rejected"):
        grpo.main(recipe(tiny_checkpoint, tmp_path, "per_device_train_batch_size=3"))


def test_vllm_needs_vllm_and_a_gpu(tiny_checkpoint, tmp_path):
    import importlib.util

    import torch

    from cxrlm.train import grpo

    if torch.cuda.is_available() and importlib.util.find_spec("vllm"):
        pytest.skip("vLLM can run here")
    with pytest.raises(ConfigError, match="use_vllm=true needs vllm"):
        grpo.main(recipe(tiny_checkpoint, tmp_path, "use_vllm=true"))


def test_reward_functions_follow_the_recipe(tiny_checkpoint, tmp_path):
    from cxrlm.train.grpo import reward_functions

    funcs = reward_functions(recipe(tiny_checkpoint, tmp_path))
    assert [f.__name__ for f in funcs] == REWARDS
    assert funcs[REWARDS.index("length")](["a"]) == [-0.5]  # min_length=2 from reward_kwargs
