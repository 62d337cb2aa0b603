"""The gate's image check: "is this a chest radiograph, and which view?" from cxrlm.gate.features.

The parameters are plain arrays in gate.npz (standardization, then a one-hidden-layer ReLU MLP) written by
`cxrlm gate fit`; gate.json beside them is the data card (what it was fitted on, held-out figures). Classes:
frontal and lateral chest radiographs, and what a non-chest image looks like instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import numpy as np

from cxrlm.gate.features import image_features

# Below refuse_below the image is refused; up to warn_below it passes with a warning.
THRESHOLDS = {"refuse_below": 0.2, "warn_below": 0.6}
CHEST_CLASSES = ("frontal", "lateral")
LOOKS_LIKE = {  # what a refusal says the image looks like, per non-chest class
    "cross_section": "a CT or MR slice",
    "document": "a document or text",
    "other_medical": "another kind of medical image (ultrasound, nuclear medicine, microscopy, fundus)",
    "photo": "a photograph",
    "synthetic": "a synthetic image (noise, gradient, pattern or blank)",
}


@dataclass
class GateScore:
    chest: float  # probability that the image is a chest radiograph, either view
    view: str  # "frontal" or "lateral": the likelier chest view
    view_score: float  # its probability among the two views
    looks_like: str  # the likeliest non-chest class (a LOOKS_LIKE key)


class GateClassifier:
    def __init__(self, params: dict, thresholds: dict | None = None):
        self.mean, self.scale = np.asarray(params["mean"]), np.asarray(params["scale"])
        n_layers = sum(key.startswith("weights_") for key in params)
        self.layers = [(np.asarray(params[f"weights_{i}"]), np.asarray(params[f"bias_{i}"])) for i in range(n_layers)]
        self.classes = [str(c) for c in params["classes"]]
        self.thresholds = thresholds or THRESHOLDS

    def score(self, pixels: np.ndarray, saturation: float = 0.0) -> GateScore:
        return self.score_features(image_features(pixels, saturation))

    def score_features(self, features: np.ndarray) -> GateScore:
        hidden = (features - self.mean) / self.scale
        for i, (weights, bias) in enumerate(self.layers):
            hidden = hidden @ weights + bias
            if i < len(self.layers) - 1:
                hidden = np.maximum(hidden, 0.0)
        logits = hidden
        probs = np.exp(logits - logits.max())
        probs = dict(zip(self.classes, probs / probs.sum(), strict=True))
        frontal, lateral = probs["frontal"], probs["lateral"]
        view = "lateral" if lateral > frontal else "frontal"
        others = {k: v for k, v in probs.items() if k not in CHEST_CLASSES}
        return GateScore(chest=float(frontal + lateral), view=view,
                         view_score=float(max(frontal, lateral) / max(frontal + lateral, 1e-12)),
                         looks_like=max(others, key=others.get))


@lru_cache(maxsize=1)
def shipped() -> GateClassifier:
    """The classifier shipped in the package (cxrlm/gate/gate.npz)."""
    with files("cxrlm.gate").joinpath("gate.npz").open("rb") as handle:
        with np.load(handle) as data:
            return GateClassifier({key: data[key] for key in data.files})
