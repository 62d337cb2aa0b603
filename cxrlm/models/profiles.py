"""Model profiles as data: which family a checkpoint is, how it is prompted, how it writes boxes, its image budget.

A checkpoint folder is matched by its config.json `model_type`; a `cxrlm.json` file in the folder may name a
profile and override fields (the shipped cxrlm-tiny does). Adding a checkpoint of a known family is one entry here.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

from cxrlm import box_formats
from cxrlm.errors import ModelLoadError
from cxrlm.models.families import FAMILIES


@dataclass(frozen=True)
class ModelProfile:
    name: str
    family: str  # cxrlm.models.families.FAMILIES key: turn layout, loader, trainable modules
    model_types: tuple[str, ...]  # config.json model_type values this profile accepts
    dialect: str  # cxrlm.prompts.templates.DIALECTS key
    box_format: str  # how the model writes boxes: a cxrlm.box_formats.FORMATS name ("pixels" of its input frame...)
    box_frame: str = "image"  # what normalized coordinates span: a cxrlm.box_formats.FRAMES name
    # Qwen2.5-VL makes about H*W/28^2 visual tokens: the budget is set deliberately, not left at the
    # processor default (12.8 MP, up to 16k tokens), which is slow and no better for a 2-3k px radiograph.
    min_pixels: int = 256 * 28 * 28
    max_pixels: int = 1024 * 28 * 28
    max_new_tokens: int = 2048
    remote_code: bool = False  # runs Python shipped with the checkpoint (config.json auto_map): opt-in only
    # What a checkpoint says of itself on every output (ModelOutput.model_notice), set in its cxrlm.json: the shipped
    # demonstration model declares its near-chance accuracy so that no surface shows its answers without saying so.
    notice: str | None = None
    views: tuple[str, ...] = ("frontal", "lateral")  # views it was trained on; ("frontal",): the gate refuses laterals
    # What the checkpoint was trained to locate (lower case); grounding anything else gives a warning. None: not
    # declared (general grounders such as Qwen2.5-VL), so no phrase is warned about.
    grounding_phrases: tuple[str, ...] | None = None
    # Trained to read a study against the patient's prior one (its images after the current ones): M4CXR. Only
    # these get `cxrlm mcp`'s compare tool; any other model would be asked for a comparison it never learnt.
    priors: bool = False

    def __post_init__(self):
        if self.grounding_phrases is not None:  # cxrlm.json gives a list, in any case
            object.__setattr__(self, "grounding_phrases", tuple(p.strip().lower() for p in self.grounding_phrases))
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {', '.join(FAMILIES)}")
        for field, check in (("box_format", box_formats.check), ("box_frame", box_formats.check_frame)):
            try:
                check(getattr(self, field))
            except ValueError as err:
                raise ValueError(f"{field}: {err}") from None
        if isinstance(self.views, str) or not self.views or not set(self.views) <= {"frontal", "lateral"}:
            raise ValueError(f"views {self.views!r}: give a list of 'frontal' and/or 'lateral'")
        object.__setattr__(self, "views", tuple(self.views))  # a cxrlm.json list, kept hashable


PROFILES = {
    p.name: p
    for p in (
        # NV-Reason-CXR-3B and other Qwen2.5-VL fine-tunes; Qwen2.5-VL writes absolute pixel boxes of its input.
        ModelProfile("nv-reason-cxr", "qwen2_5_vl", ("qwen2_5_vl",), "nv-reason", "pixels"),
        ModelProfile("qwen2-vl", "qwen2_5_vl", ("qwen2_vl",), "nv-reason", "pixels"),
        # RadVLM: LLaVA-OneVision-7B (anyres: tiles of the whole image, padding dropped), 0-1 boxes of the image.
        ModelProfile("radvlm", "llava_onevision", ("llava_onevision",), "radvlm", "norm1", max_new_tokens=1024),
        # MedGemma 4B/27B: Gemma 3, the image stretched to 896x896, so 0-1 boxes are of the whole image.
        ModelProfile("medgemma", "gemma3", ("gemma3",), "medgemma", "norm1", max_new_tokens=1024),
        # MedGemma 1.5 4B: the same Gemma 3 checkpoint type, trained to ground anatomy in [y0, x0, y1, x1] of 0-1000
        # (cxrlm.box_formats "int1000_yxyx"); picked by {"profile": "medgemma-1.5"} in the folder's cxrlm.json.
        ModelProfile("medgemma-1.5", "gemma3", ("gemma3",), "medgemma-1.5", "int1000_yxyx", max_new_tokens=1024),
        # Qwen3-VL: 32 px merged patches, boxes in 0-1000 of its (aspect-kept, uncut) input, i.e. of the image.
        ModelProfile("qwen3-vl", "qwen3_vl", ("qwen3_vl",), "qwen3-vl", "int1000",
                     min_pixels=256 * 32 * 32, max_pixels=1024 * 32 * 32),
        # Newer Qwen2.5-VL-based CXR models share model_type qwen2_5_vl, so they are chosen by name in the folder's
        # cxrlm.json ({"profile": "chexone"}); dialects and sources in cxrlm/prompts/templates.py.
        # CheXOne: 512*512 max pixels as its README recommends ("to align with the training setting"), its
        # commented min_pixels 256*28*28. Boxes: "<|ref|>name<|/ref|><|box|>(x1,y1),(x2,y2)<|/box|>" ("int100_points")
        # whose scale CheXOne does not state; 0-100 is assumed from its GRPO script's example "(12,60),(18,87)" and
        # CheXagent's CheXinstruct lineage.
        ModelProfile("chexone", "qwen2_5_vl", ("qwen2_5_vl",), "chexone-reasoning", "int100_points",
                     max_pixels=512 * 512),
        ModelProfile("chexone-instruct", "qwen2_5_vl", ("qwen2_5_vl",), "chexone-instruct", "int100_points",
                     max_pixels=512 * 512, max_new_tokens=1024),
        # Lingshu-7B/32B: no published CXR prompt or box convention; Qwen2.5-VL's pixel boxes assumed (unverified).
        ModelProfile("lingshu", "qwen2_5_vl", ("qwen2_5_vl",), "lingshu", "pixels", max_new_tokens=1024),
        # M4CXR and other checkpoints that ship their own code: any model_type with an auto_map, opt-in only.
        ModelProfile("m4cxr", "remote_code", (), "m4cxr", "int100", max_new_tokens=1024, remote_code=True,
                     priors=True),
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
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read {config_path}: {err}") from None
    model_type = config.get("model_type", "")
    has_code = "auto_map" in config  # the checkpoint ships Python classes of its own
    overrides = _read_overrides(model_dir)
    name = overrides.pop("profile", None)
    profile = PROFILES.get(name) if name else _default_for(model_type)
    if name and profile is None:
        raise ModelLoadError(f"{model_dir}/cxrlm.json names unknown profile {name!r}; known: {', '.join(PROFILES)}")
    if profile is None and has_code:
        profile = next(p for p in PROFILES.values() if p.remote_code)
    if profile is not None and profile.remote_code and not has_code:
        raise ModelLoadError(f"profile {profile.name!r} needs remote code, but {config_path} has no auto_map")
    if profile is None or not (profile.remote_code or model_type in profile.model_types):
        supported = sorted({t for p in PROFILES.values() for t in p.model_types})
        raise ModelLoadError(
            f"unsupported model family {model_type!r} in {model_dir}; supported: {', '.join(supported)}"
        )
    try:
        return replace(profile, **overrides)
    except (TypeError, ValueError) as err:
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
