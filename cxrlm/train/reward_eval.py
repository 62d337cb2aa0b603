"""Mean reward of a checkpoint on held-out GRPO prompts: did GRPO raise the rewards it optimised?

`mean_rewards(model_dir, prompts_file, rewards)` samples completions for every prompt (as GRPO does: same chat
template, images and temperature) and averages each named reward over the completions it scores. Command line:
`cxrlm eval rewards --model DIR --data grpo_val.jsonl --rewards format,tag_count` (cxrlm/cli/checks.py).
Not here: task metrics over a manifest (cxrlm.eval does that).
"""

from __future__ import annotations

import math

from cxrlm.train.data import GRPO_COLUMNS, load_pil, read_jsonl
from cxrlm.train.rewards import get_reward


def sample_completions(model, processor, row: dict, samples: int, max_new_tokens: int, temperature: float) -> list:
    import torch

    images = [load_pil(p) for p in row["images"]]
    text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=images or None, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens,
                             num_return_sequences=samples)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def mean_rewards(model_dir, prompts_file, rewards: list[str], samples: int = 4, max_new_tokens: int = 64,
                 temperature: float = 1.0, seed: int = 0) -> dict[str, float]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True).eval()
    funcs = {name: get_reward(name) for name in rewards}
    scores: dict[str, list[float]] = {name: [] for name in rewards}
    for row in read_jsonl(prompts_file, GRPO_COLUMNS):
        completions = sample_completions(model, processor, row, samples, max_new_tokens, temperature)
        columns = {key: [value] * len(completions) for key, value in row.items() if key != "prompt"}
        for name, func in funcs.items():
            scores[name] += [v for v in func(completions, **columns) if v is not None]
    return {name: sum(v) / len(v) if v else math.nan for name, v in scores.items()}

