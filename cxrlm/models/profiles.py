"""Model profiles as data: which family a checkpoint is, how it is prompted, how it writes boxes, its image budget.

A checkpoint folder is matched by its config.json `model_type`; a `cxrlm.json` file in the folder may name a
profile and override fields (the shipped cxrlm-tiny does). Adding a checkpoint of a known family is one entry here.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

from cxrlm.errors import ModelLoadError


@dataclass(frozen=True)
class ModelProfile:
    name: str
    family: str  # adapter module under cxrlm/models/
    model_types: tuple[str, ...]  # config.json model_type values this profile accepts
    dialect: str  # cxrlm.prompts.templates.DIALECTS key
    box_format: str  # how the model writes boxes: "pixels" (of its input frame), "norm1", "int100"
    # Qwen2.5-VL makes about H*W/28^2 visual tokens: the budget is set deliberately, not left at the
    # processor default (12.8 MP, up to 16k tokens), which is slow and no better for a 2-3k px radiograph.
    min_pixels: int = 256 * 28 * 28
    max_pixels: int = 1024 * 28 * 28
    max_new_tokens: int = 2048


PROFILES = {
    p.name: p
    for p in (
        # NV-Reason-CXR-3B and other Qwen2.5-VL fine-tunes; Qwen2.5-VL writes absolute pixel boxes of its input.
        ModelProfile("nv-reason-cxr", "qwen2_5_vl", ("qwen2_5_vl",), "nv-reason", "pixels"),
        ModelProfile("qwen2-vl", "qwen2_5_vl", ("qwen2_vl",), "nv-reason", "pixels"),
    )
}


def _default_for(model_type: str) -> ModelProfile | None:
    return next((p for p in PROFILES.values() if model_type in p.model_types), None)


def resolve_profile(model_dir: Path) -> ModelProfile:
    """The profile for a checkpoint folder, from its config.json and optional cxrlm.json."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{model_dir} has no config.json: pass a Hugging Face checkpoint folder to --model")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type", "")
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read {config_path}: {err}") from None
    overrides = _read_overrides(model_dir)
    name = overrides.pop("profile", None)
    profile = PROFILES.get(name) if name else _default_for(model_type)
    if name and profile is None:
        raise ModelLoadError(f"{model_dir}/cxrlm.json names unknown profile {name!r}; known: {', '.join(PROFILES)}")
    if profile is None or model_type not in profile.model_types:
        supported = sorted({t for p in PROFILES.values() for t in p.model_types})
        raise ModelLoadError(
            f"unsupported model family {model_type!r} in {model_dir}; supported: {', '.join(supported)}"
        )
    try:
        return replace(profile, **overrides)
    except TypeError as err:
        raise ModelLoadError(f"bad field in {model_dir}/cxrlm.json: {err}") from None


def _read_overrides(model_dir: Path) -> dict:
    path = model_dir / "cxrlm.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ModelLoadError(f"{path} is not valid JSON: {err}") from None
    return {k: v for k, v in data.items() if not k.startswith("_")}
