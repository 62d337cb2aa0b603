"""Qwen2-VL / Qwen2.5-VL checkpoints (NV-Reason-CXR-3B and other fine-tunes) from a local folder."""

from pathlib import Path

from cxrlm.engines.hf import HFEngine
from cxrlm.models.hf_common import assistant_turn, load_engine
from cxrlm.models.hf_common import images_first_turn as user_turn
from cxrlm.models.profiles import ModelProfile

__all__ = ["assistant_turn", "load", "user_turn"]


def load(model_dir: Path, profile: ModelProfile, device: str, dtype) -> HFEngine:
    # Qwen2-VL's processors read the pixel budget as size={shortest_edge: min_pixels, longest_edge: max_pixels}.
    size = {"shortest_edge": profile.min_pixels, "longest_edge": profile.max_pixels}
    return load_engine(model_dir, device, dtype, size=size)
