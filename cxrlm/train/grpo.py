"""GRPO with verifiable rewards on TRL's GRPOTrainer: `main(GRPORecipe) -> output folder`.

Rows are user prompts (`prompt`) with image paths (`images`) and ground-truth columns; the recipe names rewards
from `cxrlm.train.rewards.REWARDS` (with weights and per-reward settings). Rows of several tasks can share a batch:
each reward scores its own task and returns None for the others. Generation runs in transformers, or in vLLM
(`use_vllm`, colocated or `trl vllm-serve`) when it is installed. Not here: the rewards themselves (rewards.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cxrlm.errors import ConfigError
from cxrlm.train import build
from cxrlm.train.config import GRPORecipe
from cxrlm.train.data import GRPO_COLUMNS, ImageLoadingCollator, read_dataset
from cxrlm.train.rewards import get_reward

if TYPE_CHECKING:
    from cxrlm.models.families import Family


def reward_functions(recipe: GRPORecipe) -> list:
    return [get_reward(name, **recipe.reward_kwargs.get(name, {})) for name in recipe.rewards]


def vllm_arguments(recipe: GRPORecipe) -> dict:
    if not recipe.use_vllm:
        return {"use_vllm": False}
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        raise ConfigError("use_vllm=true needs vllm installed and a CUDA GPU: pip install vllm, or set use_vllm=false")
    return {
        "use_vllm": True,
        "vllm_mode": recipe.vllm_mode,
        "vllm_server_host": recipe.vllm_server_host,
        "vllm_server_port": recipe.vllm_server_port,
        "vllm_gpu_memory_utilization": recipe.vllm_gpu_memory_utilization,
    }


def generation_arguments(recipe: GRPORecipe, model, family: Family) -> dict:
    """Keep image placeholder tokens out of sampled completions: a completion holding one makes the model's
    multimodal position ids disagree with its pixel inputs in the loss pass (an undertrained model samples them)."""
    if recipe.use_vllm:  # vLLM's sampler takes no bad_words_ids; its models do not sample these tokens in practice
        return {}
    ids = [getattr(model.config, name) for name in family.placeholder_tokens]
    return {"generation_kwargs": {"bad_words_ids": [[i] for i in ids if i is not None]}}


def main(recipe: GRPORecipe) -> Path:
    from trl import GRPOConfig, GRPOTrainer

    train_dataset = read_dataset(recipe.train_file, GRPO_COLUMNS, recipe.max_samples)
    family = build.training_family(recipe)
    model, processor = build.load_for_training(recipe, family)
    # TRL left-pads prompts for generation but rebuilds the multimodal inputs of the loss pass (mm_token_type_ids)
    # with the processor's own padding side; Qwen tokenizers pad right, which shifts the image-token map against
    # the tokens when prompts differ in length (wrong M-RoPE positions, or a shape error). Pad left everywhere.
    processor.tokenizer.padding_side = "left"
    try:
        args = GRPOConfig(
            **build.trainer_arguments(recipe),
            **vllm_arguments(recipe),
            **generation_arguments(recipe, model, family),
            remove_unused_columns=False,  # the rewards read the ground-truth columns
            num_generations=recipe.num_generations,
            max_completion_length=recipe.max_completion_length,
            temperature=recipe.temperature,
            top_p=recipe.top_p,
            beta=recipe.beta,
            epsilon=recipe.epsilon,
            num_iterations=recipe.num_iterations,
            loss_type=recipe.loss_type,
            scale_rewards=recipe.scale_rewards,
            reward_weights=recipe.reward_weights,
            log_completions=recipe.log_completions,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_functions(recipe),
            args=args,
            train_dataset=train_dataset,
            processing_class=processor,
            peft_config=build.lora_config(recipe, family),
            callbacks=[build.progress_callback()],
        )
    except ValueError as err:  # e.g. a generation batch that num_generations does not divide
        raise ConfigError(f"GRPO setup rejected: {str(err).splitlines()[0]}") from None
    trainer.data_collator = ImageLoadingCollator(trainer.data_collator, family.lay_out)
    build.run_training(trainer, recipe)
    return build.save_checkpoint(trainer, processor, recipe)
