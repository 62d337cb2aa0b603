"""What SFT and GRPO share: the model and processor loaded for training through the checkpoint's family record
(cxrlm.models.families: processor arguments, vision tower, LoRA targets), the LoRA config, TRL's common arguments,
a console progress line (loss, rewards, samples/s, ETA) and saving a checkpoint that `cxrlm.models.load_model`
reads back. Not here: anything specific to one method (sft.py, grpo.py).
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cxrlm.errors import ConfigError
from cxrlm.train.config import TrainRecipe

if TYPE_CHECKING:
    from cxrlm.models.families import Family


def torch_dtype(recipe: TrainRecipe):
    import torch

    if recipe.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, recipe.dtype)


def training_family(recipe: TrainRecipe) -> Family:
    """The family record of the recipe's checkpoint folder, found as `load_model` finds it (config.json's
    model_type, or the profile its cxrlm.json names)."""
    from cxrlm.models.families import FAMILIES
    from cxrlm.models.profiles import resolve_profile

    model_dir = Path(recipe.model)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"model {model_dir} is not a checkpoint folder (no config.json): set model=DIR")
    family = FAMILIES[resolve_profile(model_dir).family]
    if family.remote_code:
        raise ConfigError(f"{model_dir} runs its own model code (auto_map): cxrlm trains built-in families only")
    return family


def load_for_training(recipe: TrainRecipe, family: Family):
    """(model, processor) from the recipe's checkpoint folder, loaded by its family with the recipe's pixel budget;
    QLoRA loads the base in 4 bits (GPU only)."""
    if recipe.cache_vision and not family.caches_vision:
        raise ConfigError(f"cache_vision works with Qwen2.5-VL's vision tower, not {family.name}'s: "
                          "set cache_vision=false")
    kwargs = {"dtype": torch_dtype(recipe)}
    if recipe.load_in_4bit:
        kwargs["quantization_config"] = _four_bit_config(kwargs["dtype"])
    model, processor = family.load_pretrained(Path(recipe.model), recipe.min_pixels, recipe.max_pixels, **kwargs)
    if recipe.freeze_vision:
        tower = _submodule(model, family.vision_tower)
        if tower is None:
            raise ConfigError(f"freeze_vision=true, but {recipe.model} has no vision tower at {family.vision_tower}")
        tower.requires_grad_(False)
        if recipe.cache_vision:
            cache_vision_tokens(tower)
    return model, processor


def _submodule(model, path: str):
    """The module at a dotted path such as "model.visual"; None when the model has nothing there."""
    for name in path.split("."):
        model = getattr(model, name, None)
    return model


def cache_vision_tokens(visual) -> None:
    """Compute each image's tokens once: a frozen tower gives the same output for the same pixels, and SFT sees
    each image in many rows (one per question). Keyed by a hash of the image's patches and grid; one process."""
    import hashlib

    import torch

    cache, original, template = {}, visual.forward, []

    def forward(hidden_states, grid_thw, **kwargs):
        pieces = hidden_states.split(grid_thw.prod(-1).tolist())
        keys = [hashlib.blake2b(p.detach().float().cpu().numpy().tobytes() + bytes(str(g.tolist()), "ascii"),
                                digest_size=16).digest() for p, g in zip(pieces, grid_thw)]
        todo = [i for i, k in enumerate(keys) if k not in cache]
        if todo:
            with torch.no_grad():
                out = original(torch.cat([pieces[i] for i in todo]), grid_thw=grid_thw[todo], **kwargs)
            tokens = out if isinstance(out, torch.Tensor) else out.pooler_output
            sizes = (grid_thw[todo].prod(-1) // visual.spatial_merge_size**2).tolist()
            cache.update({keys[i]: t for i, t in zip(todo, tokens.split(sizes))})
            template[:] = [out]  # the output type this transformers version returns, reused for cached batches
        merged = torch.cat([cache[k] for k in keys])
        if isinstance(template[0], torch.Tensor):
            return merged
        template[0].pooler_output, template[0].last_hidden_state = merged, None
        return template[0]

    visual.forward = forward


def _four_bit_config(dtype):
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("load_in_4bit (QLoRA) needs a CUDA GPU and none is visible: set load_in_4bit=false")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=True)


def lora_config(recipe: TrainRecipe, family: Family):
    if not recipe.use_peft:
        return None
    from peft import LoraConfig

    targets = recipe.lora_target_modules
    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        # "all-linear" in peft would also adapt the vision tower and its projector: the language model's attention
        # and MLP projections are the usual choice for VLM fine-tuning. A list in the recipe is used as given.
        target_modules=family.lora_targets() if targets == "all-linear" else targets,
        task_type="CAUSAL_LM",
    )


def trainer_arguments(recipe: TrainRecipe) -> dict:
    """Keyword arguments that `SFTConfig` and `GRPOConfig` both take, from the recipe."""
    import torch

    dtype = torch_dtype(recipe)
    return dict(
        output_dir=recipe.output_dir,
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        **_checkpointing_arguments(recipe.gradient_checkpointing),
        seed=recipe.seed,
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        logging_steps=recipe.logging_steps,
        report_to=recipe.report_to,
        run_name=recipe.run_name,
        # Mixed precision only on a GPU: bf16 autocast on CPU is slow and changes nothing for a float32 model.
        bf16=dtype == torch.bfloat16 and torch.cuda.is_available(),
        fp16=dtype == torch.float16 and torch.cuda.is_available(),
        # Without a GPU, say so: accelerate only sets up CPU (gloo) process groups under torchrun when told.
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,  # ProgressCallback prints one line per log step instead
        dataloader_num_workers=recipe.dataloader_num_workers,
    )


def _checkpointing_arguments(enabled: bool) -> dict:
    """Activation checkpointing under the name this transformers version uses (it renamed gradient_checkpointing)."""
    import dataclasses

    from transformers import TrainingArguments

    prefix = "activation" if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)} \
        else "gradient"
    # Non-reentrant checkpointing works with frozen inputs (LoRA, a frozen vision tower) and with DDP.
    return {f"{prefix}_checkpointing": enabled,
            f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if enabled else None}


def progress_callback():
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """One console line per log step: step, loss and rewards, samples/s and ETA."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.first_step = time.perf_counter(), state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            done = state.global_step - self.first_step
            elapsed = time.perf_counter() - self.start
            per_step = elapsed / done if done else 0.0
            samples = done * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            eta = timedelta(seconds=round(per_step * max(0, state.max_steps - state.global_step)))
            shown = {k: v for k, v in logs.items() if k in _SHOWN or k.startswith("rewards/") and k.endswith("/mean")}
            values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
            print(f"step {state.global_step}/{state.max_steps} {values} | "
                  f"{samples / elapsed if elapsed else 0:.2f} samples/s | ETA {eta}", flush=True)

    return ProgressCallback()


_SHOWN = ("loss", "eval_loss", "reward", "reward_std", "learning_rate", "grad_norm", "train_loss",
          "completions/mean_length")


def run_training(trainer, recipe: TrainRecipe) -> None:
    """trainer.train(), resuming when asked; a missing checkpoint, or a bad row found while building a batch, is
    the user's error, said in one line."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # ProgressCallback prints a shorter line per log step
    if not recipe.use_peft:
        trainer._load_from_checkpoint = _full_weights_loader(trainer)
    try:
        trainer.train(resume_from_checkpoint=recipe.resume_from_checkpoint or None)
    except ValueError as err:
        if "checkpoint" in str(err).lower() and recipe.resume_from_checkpoint:
            raise ConfigError(f"cannot resume: {str(err).splitlines()[0]} (set resume_from_checkpoint=null)") from None
        raise


def _full_weights_loader(trainer):
    """Trainer's resume loader for full fine-tuning, loading a checkpoint as `from_pretrained` does.

    transformers saves checkpoints in the hub's key layout (`visual.*`, `model.layers.*`) but resumes with a plain
    `load_state_dict(strict=False)` in the model's own layout (`model.visual.*`, ...): every key misses, with only
    a warning, and a vision-language model silently restarts from its first weights (huggingface/transformers#43701).
    """

    def load(checkpoint: str, model=None) -> None:
        model = model if model is not None else trainer.model
        saved = type(model).from_pretrained(checkpoint, dtype=model.dtype, local_files_only=True)
        model.load_state_dict(saved.state_dict())  # strict: a checkpoint of another architecture is an error

    return load


def save_checkpoint(trainer, processor, recipe: TrainRecipe) -> Path:
    """Save the final model to output_dir so `cxrlm.models.load_model(output_dir)` loads it.

    LoRA: the adapter goes to output_dir/adapter; merged full weights go to output_dir (not for a 4-bit base, whose
    merge would lose precision: then only the adapter is saved).
    """
    out = Path(recipe.output_dir)
    if not recipe.use_peft:
        trainer.save_model(str(out))  # gathers sharded (ZeRO-3, FSDP) weights; writes on the main process only
    else:
        trainer.save_model(str(out / "adapter"))
    main = trainer.accelerator.is_main_process
    if recipe.use_peft and (not recipe.merge_lora or recipe.load_in_4bit):
        if main:
            processor.save_pretrained(out / "adapter")
        return out / "adapter"
    if main:
        if recipe.use_peft:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
        profile = Path(recipe.model) / "cxrlm.json"  # keep the source checkpoint's profile choice
        if profile.is_file():
            shutil.copy(profile, out / "cxrlm.json")
    return out
