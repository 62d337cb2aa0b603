"""Checkpoints that ship their own model code (config.json `auto_map`), such as M4CXR; opt-in only.

`load_model(..., trust_remote_code=True)` must be passed explicitly: without it such a folder is refused, because
loading it runs Python written by the checkpoint's authors. The family record (cxrlm.models.families.REMOTE_CODE)
loads the folder and never downloads anything; the code must already be in the folder. Such processors take
plain-text turns with the image marker written into the text (M4CXR: "radiology image: <image> ..."), so the
engine flattens the chat before templating.

Coordinates: M4CXR writes boxes as 0-100 integers of its input, a square resize of the whole radiograph, i.e. of
the original image (profile box_format "int100", box_frame "image"); set box_frame in cxrlm.json for a
checkpoint that pads or crops.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from cxrlm.engines.hf import HFEngine
from cxrlm.prompts.templates import DIALECTS

if TYPE_CHECKING:
    from cxrlm.models.profiles import ModelProfile

# How a plain-text turn names its images, per dialect; a dialect not listed gets the bare "<image>" marker.
IMAGE_TEXT = {"m4cxr": "radiology image: <image> "}


class RemoteCodeEngine(HFEngine):
    """HFEngine over a remote-code processor whose chat template wants string turns."""

    transformers_family = False  # its own forward: classify scores whole conversations (HFEngine.yes_probability)

    def __init__(self, model, processor, device: str, image_text: str):
        super().__init__(model, processor, device)
        self.image_text = image_text
        # Its own code lays out pixel_values in a way cxrlm.heatmaps does not know: no heatmaps.
        self.capabilities = replace(self.capabilities, heatmaps=False)

    def _inputs(self, conversations, images):
        return super()._inputs([flatten(c, self.image_text) for c in conversations], images)


def flatten(messages: list[dict], image_text: str) -> list[dict]:
    """Structured turns -> plain-text turns, each image written as `image_text` before the turn's text."""
    flat = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            parts = [image_text for part in content if part["type"] == "image"]
            parts += [part["text"] for part in content if part["type"] == "text"]
            content = "".join(parts)
        flat.append({"role": message["role"], "content": content})
    return flat


def engine(model, processor, device: str, profile: ModelProfile) -> RemoteCodeEngine:
    """The engine for a loaded remote-code model: turns flattened with the profile dialect's image text."""
    return RemoteCodeEngine(model, processor, device, IMAGE_TEXT.get(DIALECTS[profile.dialect].name, "<image> "))
