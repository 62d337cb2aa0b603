"""Qwen2-VL / Qwen2.5-VL checkpoints (NV-Reason-CXR-3B and other fine-tunes) from a local folder."""

from pathlib import Path

from cxrlm.engines.hf import HFEngine
from cxrlm.models.profiles import ModelProfile


def load(model_dir: Path, profile: ModelProfile, device: str, dtype) -> HFEngine:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    # Qwen2-VL's processors read the pixel budget as size={shortest_edge: min_pixels, longest_edge: max_pixels}.
    size = {"shortest_edge": profile.min_pixels, "longest_edge": profile.max_pixels}
    processor = AutoProcessor.from_pretrained(model_dir, size=size, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    return HFEngine(model, processor, device)


def user_turn(text: str, n_images: int) -> dict:
    """A user message in the Qwen chat format, the images before the text as Qwen-VL was trained."""
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}
