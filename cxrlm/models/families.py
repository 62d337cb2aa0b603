"""Model families as data: one `Family` record per architecture, in one registry, with direct references.

A family says everything that depends on the architecture and not on the checkpoint: how images sit in a user
turn, which processor arguments carry the image budget, how a local folder is loaded (for inference and for
training), where the vision tower and the language model are (freeze_vision, LoRA targets), which config fields
name image placeholder tokens, and how a tiny random checkpoint of it is built for tests. Profiles
(cxrlm/models/profiles.py) name a family by its key here; what a checkpoint was trained to say (prompts, box
conventions) is the profile's and the dialect's, not the family's. Nothing here imports torch or transformers at
module level.

Adding a family is one `Family(...)` below plus a tiny builder (cxrlm/models/tiny_families.py); see docs/MODELS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cxrlm.models import remote_code, tiny, tiny_families

if TYPE_CHECKING:
    from cxrlm.models.profiles import ModelProfile

# The language model's attention and MLP projections: the usual LoRA targets for VLM fine-tuning. Matched under
# the family's `language_model` path only, because vision towers reuse these names (Qwen2.5-VL's vision MLP has
# gate/up/down_proj, SigLIP's attention has q/k/v_proj).
LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def qwen_pixel_budget(min_pixels: int, max_pixels: int) -> dict:
    """Qwen2-VL-style processors (Qwen2/2.5/3-VL) read the pixel budget as size={shortest_edge, longest_edge}."""
    return {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}


def fixed_resolution(min_pixels: int, max_pixels: int) -> dict:
    """Processors with a fixed input size (Gemma 3's 896 px square, LLaVA-OneVision's anyres tiles): no budget."""
    return {}


def _image_text_to_text():
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText


def _causal_lm():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def _hf_engine(model, processor, device: str, profile: ModelProfile):
    from cxrlm.engines.hf import HFEngine

    return HFEngine(model, processor, device)


@dataclass(frozen=True)
class Family:
    name: str  # the registry key profiles name (and the model_type of its tiny checkpoint)
    images_first: bool  # a user turn's images come before its text (Qwen, LLaVA) or after it (Gemma 3)
    # (min_pixels, max_pixels) of a profile or recipe -> AutoProcessor.from_pretrained keyword arguments
    processor_args: Callable[[int, int], dict]
    # Module paths inside the loaded model (transformers >= 5 layout: model.language_model, model.visual ...).
    vision_tower: str  # frozen by freeze_vision; for Qwen the patch merger (projector) lives inside it
    projector: str | None  # the separate vision-to-text projector, if any (trained by freeze_vision)
    language_model: str = "model.language_model"
    placeholder_tokens: tuple[str, ...] = ()  # config fields of image tokens a sampled completion must not hold
    build_tiny: Callable[..., Path] | None = None  # (out_dir, seed=...) -> a random checkpoint folder
    auto_model: Callable[[], type] = _image_text_to_text
    engine: Callable = _hf_engine  # (model, processor, device, profile) -> engine
    remote_code: bool = False  # the checkpoint's own Python builds the model: opt-in only, not trainable here
    caches_vision: bool = False  # the vision tower's forward is (patches, grid_thw): cache_vision can key on it

    # --- chat turns (CxrModel and chat.Session build every conversation through these)

    def user_turn(self, text: str, n_images: int) -> dict:
        images, words = [{"type": "image"}] * n_images, [{"type": "text", "text": text}]
        return {"role": "user", "content": images + words if self.images_first else words + images}

    def assistant_turn(self, text: str) -> dict:
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}

    def lay_out(self, messages: list[dict]) -> list[dict]:
        """Training rows' user turns in this family's order (rows are written images-first, family-agnostic)."""
        out = []
        for message in messages:
            content = message["content"]
            if message["role"] != "user" or isinstance(content, str):
                out.append(message)
                continue
            texts = [part for part in content if part["type"] != "image"]
            images = [part for part in content if part["type"] == "image"]
            out.append({**message, "content": images + texts if self.images_first else texts + images})
        return out

    # --- loading

    def load_pretrained(self, model_dir: Path, min_pixels: int, max_pixels: int, **model_kwargs):
        """(model, processor) from a local folder, never the hub; `model_kwargs` go to from_pretrained."""
        from transformers import AutoProcessor

        code = {"trust_remote_code": True} if self.remote_code else {}
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True, **code,
                                                  **self.processor_args(min_pixels, max_pixels))
        model = self.auto_model().from_pretrained(model_dir, local_files_only=True, **code, **model_kwargs)
        return model, processor

    def load(self, model_dir: Path, profile: ModelProfile, device: str, dtype):
        """The inference engine for a folder of this family, with the profile's image budget."""
        model, processor = self.load_pretrained(model_dir, profile.min_pixels, profile.max_pixels, dtype=dtype)
        model.to(device).eval()
        return self.engine(model, processor, device, profile)

    # --- training

    def lora_targets(self) -> str:
        """A peft `target_modules` regex: the language model's projections, never the vision tower's."""
        layers = self.language_model.replace(".", r"\.")
        return rf"(.*\.)?{layers}\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(LANGUAGE_PROJECTIONS)})"


QWEN_PLACEHOLDERS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")

QWEN2_5_VL = Family(
    # Qwen2-VL / Qwen2.5-VL (NV-Reason-CXR-3B, CheXOne, Lingshu): 14 px patches merged 2x2, a pixel budget.
    "qwen2_5_vl", images_first=True, processor_args=qwen_pixel_budget, vision_tower="model.visual",
    projector=None, placeholder_tokens=QWEN_PLACEHOLDERS, build_tiny=tiny.build_tiny_checkpoint,
    caches_vision=True,
)
QWEN3_VL = Family(
    # Qwen3-VL: 16 px patches merged 2x2 (32 px per token; profiles set 32 px budgets), deepstack features.
    "qwen3_vl", images_first=True, processor_args=qwen_pixel_budget, vision_tower="model.visual",
    projector=None, placeholder_tokens=QWEN_PLACEHOLDERS, build_tiny=tiny_families.build_qwen3_vl,
)
LLAVA_ONEVISION = Family(
    # LLaVA-OneVision (RadVLM): SigLIP tiles ("anyres"), "<image>\n" before the question as RadVLM was trained.
    "llava_onevision", images_first=True, processor_args=fixed_resolution, vision_tower="model.vision_tower",
    projector="model.multi_modal_projector", placeholder_tokens=("image_token_index", "video_token_index"),
    build_tiny=tiny_families.build_llava_onevision,
)
GEMMA3 = Family(
    # Gemma 3 (MedGemma): text before the image as in MedGemma's model card; the template folds a system prompt
    # into the first user turn.
    "gemma3", images_first=False, processor_args=fixed_resolution, vision_tower="model.vision_tower",
    projector="model.multi_modal_projector",
    placeholder_tokens=("image_token_index", "boi_token_index", "eoi_token_index"),
    build_tiny=tiny_families.build_gemma3,
)
REMOTE_CODE = Family(
    # Checkpoints that ship their own model code (M4CXR): plain-text turns, the image marker written into the text
    # by the engine (cxrlm.models.remote_code). Loaded only after load_model checked the explicit opt-in.
    "remote_code", images_first=True, processor_args=fixed_resolution, vision_tower="", projector=None,
    auto_model=_causal_lm, engine=remote_code.engine, remote_code=True,
)

FAMILIES = {f.name: f for f in (QWEN2_5_VL, QWEN3_VL, LLAVA_ONEVISION, GEMMA3, REMOTE_CODE)}
