"""LLaVA-OneVision checkpoints (RadVLM) from a local folder: Qwen2 text, SigLIP vision, anyres tiling.

Coordinates: RadVLM writes `[x1, y1, x2, y2]` as 0-1 fractions of the whole radiograph. The processor stretches the
base view to a square and tiles an aspect-kept copy whose padding the model drops ("spatial unpad"), so the model
never sees a crop: fractions of its input are fractions of the original image (profile box_frame "image").
"""

from pathlib import Path

from cxrlm.engines.hf import HFEngine
from cxrlm.models.hf_common import assistant_turn, load_engine
from cxrlm.models.hf_common import images_first_turn as user_turn  # "<image>\n" then the question, as RadVLM
from cxrlm.models.profiles import ModelProfile

__all__ = ["assistant_turn", "load", "user_turn"]


def load(model_dir: Path, profile: ModelProfile, device: str, dtype) -> HFEngine:
    return load_engine(model_dir, device, dtype)
