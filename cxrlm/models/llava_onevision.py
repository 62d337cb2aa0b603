"""LLaVA-OneVision checkpoints (RadVLM) from a local folder: Qwen2 text, SigLIP vision, anyres tiling.

Coordinates: RadVLM writes `[x1, y1, x2, y2]` as 0-1 fractions of the whole radiograph. The processor stretches the
base view to a square and tiles an aspect-kept copy whose padding the model drops ("spatial unpad"), so the model
never sees a crop: fractions of its input are fractions of the original image (profile box_frame "image").
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
    """Images first, as RadVLM was trained ("<image>\\n" then the question); only the first turn carries them."""
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}
