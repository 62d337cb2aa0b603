"""Gemma 3 checkpoints (MedGemma 4B/27B) from a local folder.

Coordinates: the Gemma 3 processor resizes the radiograph to a square (896 px for MedGemma) without keeping the
aspect ratio and without cropping (pan-and-scan is off), so 0-1 fractions of its input are fractions of the
original image (profile box_frame "image"). MedGemma's own box convention is not published in its model card; the
profile asks for 0-1 fractions in the prompt and parses norm1.
"""

from pathlib import Path

from cxrlm.engines.hf import HFEngine
from cxrlm.models.profiles import ModelProfile


def load(model_dir: Path, profile: ModelProfile, device: str, dtype) -> HFEngine:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    return HFEngine(model, processor, device)


def user_turn(text: str, n_images: int) -> dict:
    """Text then images, as in MedGemma's model card; Gemma's template folds a system prompt into this turn."""
    return {"role": "user", "content": [{"type": "text", "text": text}] + [{"type": "image"}] * n_images}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}
