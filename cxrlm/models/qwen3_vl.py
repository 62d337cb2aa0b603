"""Qwen3-VL checkpoints from a local folder: Qwen2.5-VL's chat format and loading, a 32 px pixel budget.

Coordinates: Qwen3-VL writes boxes in 0-1000 units of its input, which is the whole image resized to multiples of
32 px with the aspect ratio kept and nothing cropped, so thousandths of its input are thousandths of the original
image (profile box_format "int1000", box_frame "image").
"""

from cxrlm.models.qwen2_5_vl import assistant_turn, load, user_turn

__all__ = ["assistant_turn", "load", "user_turn"]
