"""Training recipes: one dataclass per method (`SFTRecipe`, `GRPORecipe`), read from YAML with key=value overrides.

Fields are grouped as in TRL (model, data, optimisation, checkpoints and logging, PEFT, then the method's own) and
documented once, here. `__post_init__` rejects bad values and bad combinations with a one-line `ConfigError`; an
unknown key is an error too, so a typo never silently falls back to a default. Not here: building TRL's own
config objects (sft.py and grpo.py map these fields onto `SFTConfig` / `GRPOConfig`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from cxrlm.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")
VLLM_MODES = ("colocate", "server")


@dataclass
class TrainRecipe:
    """Fields shared by every method."""

    # --- model
    model: str = ""  # checkpoint folder of a built-in family (cxrlm.models.families), e.g. NV-Reason-CXR-3B
    dtype: str = "auto"  # auto = bfloat16 on a GPU, float32 on CPU
    freeze_vision: bool = False  # keep the family's vision tower fixed (Qwen's includes its patch merger)
    cache_vision: bool = False  # with freeze_vision: compute each image's vision tokens once (single process)
    # Image token budget of the Qwen families (Qwen2.5-VL spends about H*W/28^2 tokens per image, Qwen3-VL H*W/32^2);
    # Gemma 3 and LLaVA-OneVision processors have a fixed input size (Family.processor_args gives them nothing).
    min_pixels: int = 56 * 56
    max_pixels: int = 448 * 448

    # --- data (JSONL from `cxrlm data instructions`; image paths relative to the JSONL file's folder)
    train_file: str = ""
    eval_file: str | None = None
    max_samples: int | None = None  # use only the first N rows (smoke tests, quick sweeps)
    dataloader_num_workers: int = 0  # processes that decode images and build batches

    # --- optimisation
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.0  # a float < 1 is a fraction of all steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    seed: int = 42

    # --- checkpoints and logging
    output_dir: str = ""
    save_steps: int = 500
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | bool | None = None  # true = the latest checkpoint in output_dir
    logging_steps: int = 1
    report_to: list[str] = field(default_factory=lambda: ["none"])  # e.g. [tensorboard] or [wandb]; keys from env
    run_name: str | None = None

    # --- PEFT (LoRA; QLoRA = LoRA on a 4-bit base, needs a CUDA GPU and bitsandbytes)
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    load_in_4bit: bool = False
    merge_lora: bool = True  # save merged full weights, so the output loads like any checkpoint

    def __post_init__(self) -> None:
        for name in ("model", "train_file", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"the recipe sets no `{name}`: add it to the YAML or pass {name}=...")
        _check(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        _check(self.learning_rate > 0, "learning_rate must be > 0")
        _check(self.max_steps > 0 or self.num_train_epochs > 0, "set max_steps > 0 or num_train_epochs > 0")
        _check(self.per_device_train_batch_size >= 1, "per_device_train_batch_size must be >= 1")
        _check(self.dataloader_num_workers >= 0, "dataloader_num_workers must be >= 0")
        _check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1")
        _check(self.freeze_vision or not self.cache_vision, "cache_vision needs freeze_vision=true")
        _check(0 < self.min_pixels <= self.max_pixels, "need 0 < min_pixels <= max_pixels")
        _check(self.max_samples is None or self.max_samples > 0, "max_samples must be > 0 (or null for all rows)")
        _check(not self.load_in_4bit or self.use_peft, "load_in_4bit (QLoRA) trains adapters only: set use_peft=true")
        _check(self.lora_r > 0 and self.lora_alpha > 0, "lora_r and lora_alpha must be > 0")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]


@dataclass
class SFTRecipe(TrainRecipe):
    """Supervised fine-tuning on `messages` rows (user turn with image(s), assistant answer)."""

    learning_rate: float = 2e-5
    max_length: int | None = None  # None: never truncate (truncating would cut image tokens from the sequence)
    assistant_only_loss: bool = True  # loss on the assistant's tokens only, not the prompt's

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.max_length is None or self.max_length > 0, "max_length must be > 0, or null for no truncation")


@dataclass
class GRPORecipe(TrainRecipe):
    """GRPO with verifiable rewards on `prompt` rows plus ground-truth columns (labels, boxes, report, task)."""

    learning_rate: float = 1e-6
    # --- rewards: names from cxrlm.train.rewards.REWARDS, optional weights and per-reward settings
    rewards: list[str] = field(default_factory=lambda: ["format", "label_f1"])
    reward_weights: list[float] | None = None  # one per reward; default all 1
    reward_kwargs: dict[str, dict] = field(default_factory=dict)  # e.g. {length: {max_length: 256}}
    # --- generation
    num_generations: int = 8  # completions per prompt (the group)
    max_completion_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    # --- loss
    beta: float = 0.0  # KL coefficient; 0 needs no reference model
    epsilon: float = 0.2  # clipping range
    num_iterations: int = 1  # optimisation passes per generation batch
    loss_type: str = "dapo"
    scale_rewards: str = "group"  # group | batch | none
    # --- vLLM generation (GPU only): colocate shares the training GPUs; server talks to `trl vllm-serve`
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_server_host: str = "0.0.0.0"
    vllm_server_port: int = 8000
    vllm_gpu_memory_utilization: float = 0.3
    log_completions: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        from cxrlm.train.rewards import REWARDS

        _check(bool(self.rewards), "rewards is empty: name at least one, e.g. [format, label_f1]")
        unknown = [r for r in self.rewards if r not in REWARDS]
        _check(not unknown, f"unknown reward {(unknown or [''])[0]!r}; choose from: {', '.join(REWARDS)}")
        _check(len(set(self.rewards)) == len(self.rewards), "a reward is listed twice in rewards")
        _check(self.reward_weights is None or len(self.reward_weights) == len(self.rewards),
               f"reward_weights has {len(self.reward_weights or [])} values for {len(self.rewards)} rewards")
        stray = sorted(set(self.reward_kwargs) - set(self.rewards))
        _check(not stray, f"reward_kwargs sets {(stray or [''])[0]!r}, which is not in rewards")
        _check(self.num_generations >= 2, "num_generations must be >= 2: GRPO compares completions within a group")
        _check(self.max_completion_length > 0, "max_completion_length must be > 0")
        _check(self.temperature > 0, "temperature must be > 0 (GRPO samples)")
        _check(self.vllm_mode in VLLM_MODES, f"vllm_mode must be one of {', '.join(VLLM_MODES)}")
        _check(self.scale_rewards in ("group", "batch", "none"), "scale_rewards must be group, batch or none")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path | None, recipe_cls: type[TrainRecipe], overrides: list[str] = ()) -> TrainRecipe:
    """Read a YAML recipe (may be None: overrides only) and apply `key=value` overrides (values parsed as YAML)."""
    import yaml

    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe {path} does not exist: pass --recipe with a YAML file (see recipes/)")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"recipe {path} must be a mapping of field: value")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. max_steps=10)")
        values[key.strip()] = yaml.safe_load(raw) if raw else None
    return build_recipe(values, recipe_cls, source=str(path) if path else "overrides")


def build_recipe(values: dict, recipe_cls: type[TrainRecipe], source: str = "recipe") -> TrainRecipe:
    hints = typing.get_type_hints(recipe_cls)
    names = [f.name for f in dataclasses.fields(recipe_cls)]
    for key, value in values.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown field {key!r} for {recipe_cls.__name__}{hint}")
        values[key] = _coerce(key, value, hints[key])
    return recipe_cls(**values)


def _coerce(key: str, value, hint):
    """`value` as type `hint`, or a one-line ConfigError. YAML already gives native types; ints widen to floats."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        origin = typing.get_origin(option) or option
        if value is None and option is type(None):
            return None
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str) and _is_number(value):  # YAML 1.1 reads 1e-5 as a string
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, list, dict) and isinstance(value, origin):
            return value
    wanted = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"field {key!r} must be {wanted}, not {value!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def recipe_to_dict(recipe: TrainRecipe) -> dict:
    return dataclasses.asdict(recipe)
