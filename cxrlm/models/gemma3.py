"""Gemma 3 checkpoints (MedGemma 4B/27B) from a local folder.

Coordinates: the Gemma 3 processor resizes the radiograph to a square (896 px for MedGemma) without keeping the
aspect ratio and without cropping (pan-and-scan is off), so 0-1 fractions of its input are fractions of the
original image (profile box_frame "image"). MedGemma 1 publishes no box convention: its profile asks for 0-1
fractions in the prompt and parses norm1. MedGemma 1.5 writes [y0, x0, y1, x1] in 0-1000 (profile "medgemma-1.5").
"""

from pathlib import Path

from cxrlm.engines.hf import HFEngine
from cxrlm.models.hf_common import assistant_turn, load_engine
from cxrlm.models.hf_common import text_first_turn as user_turn  # Gemma's template folds a system prompt in here
from cxrlm.models.profiles import ModelProfile

__all__ = ["assistant_turn", "load", "user_turn"]


def load(model_dir: Path, profile: ModelProfile, device: str, dtype) -> HFEngine:
    return load_engine(model_dir, device, dtype)
