"""Plain data that flows through cxrlm: images, studies, messages, boxes, labels and model outputs.

No torch here. `ModelOutput.to_dict()` is the stable JSON contract documented in docs/SCHEMA.md and
checked against cxrlm/schema/model_output.json by the tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from cxrlm import DISCLAIMER
from cxrlm.pathologies import label_vocabularies

SCHEMA_VERSION = "1.1"
# FRONTAL: a PA or AP view that no file or user named; the input gate (cxrlm.gate) sees only frontal vs lateral.
VIEW_POSITIONS = ("PA", "AP", "LL", "RL", "LATERAL", "FRONTAL")
FRONTAL_VIEWS = ("PA", "AP", "FRONTAL")


class Task(StrEnum):
    """What a model is asked; a chat answer's task is what its content turned out to carry (cxrlm.chat)."""

    REASON = "reason"  # findings as CheXpert-14 labels, with the reasoning that led to them
    REPORT = "report"  # the reasoning turn, then findings and impression
    CLASSIFY = "classify"  # a probability per label
    GROUND = "ground"  # boxes for a phrase
    CHAT = "chat"  # a free question whose answer carries none of the above
    VQA = "vqa"  # training data only: a short question and answer
    CONVERSATION = "conversation"  # training data only: a multi-turn exchange


PREDICT_TASKS = (Task.REASON, Task.REPORT, Task.CLASSIFY, Task.GROUND)  # what CxrModel.predict answers
SCORED_TASKS = (Task.REPORT, Task.CLASSIFY, Task.GROUND)  # what `cxrlm eval` scores


@dataclass
class XrayImage:
    """A display-ready radiograph: 8-bit grayscale (H, W), after modality/VOI LUT and MONOCHROME1 inversion.

    `metadata` holds only non-identifying acquisition facts (modality, bits stored, photometric
    interpretation, transfer syntax, SOP Class UID); patient tags are never copied here.
    """

    pixels: np.ndarray
    source: str = ""
    view_position: str | None = None
    pixel_spacing: tuple[float, float] | None = None  # (row, column) in mm
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, the frame every box's `xyxy` refers to."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def is_frontal(self) -> bool | None:
        if self.view_position is None:
            return None
        return self.view_position in FRONTAL_VIEWS

    def to_pil(self):
        from PIL import Image

        return Image.fromarray(self.pixels).convert("RGB")


@dataclass
class Study:
    """One examination: one or more views, optionally with a prior study and its report text."""

    images: list[XrayImage]
    prior: Study | None = None
    prior_report: str | None = None


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    text: str
    n_images: int = 0  # images attached to this turn, placed before the text


@dataclass
class Box:
    """A region tied to a finding. `xyxy` is in pixels of the original image, `xyxy_norm` in 0-1."""

    label: str
    xyxy: tuple[float, float, float, float]
    xyxy_norm: tuple[float, float, float, float]
    score: float | None = None

    @classmethod
    def from_norm(cls, label: str, xyxy_norm, size: tuple[int, int], score=None) -> Box:
        width, height = size
        x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in xyxy_norm)
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        norm = (round(x1, 4), round(y1, 4), round(x2, 4), round(y2, 4))
        pixels = (round(x1 * width, 1), round(y1 * height, 1), round(x2 * width, 1), round(y2 * height, 1))
        return cls(label=label, xyxy=pixels, xyxy_norm=norm, score=score)


@dataclass
class Label:
    """A CheXpert-14 label. `probability` is None when the model gave only text, not a score."""

    name: str
    probability: float | None = None
    present: bool = True


@dataclass
class Timings:
    load_s: float | None = None
    preprocess_s: float | None = None
    generate_s: float | None = None
    new_tokens: int | None = None

    @property
    def tokens_per_s(self) -> float | None:
        if not self.generate_s or not self.new_tokens:
            return None
        return self.new_tokens / self.generate_s

    def plus(self, later: Timings) -> Timings:
        """Two turns of one conversation: the work adds up, the model was loaded once."""
        return Timings(self.load_s, _add(self.preprocess_s, later.preprocess_s),
                       _add(self.generate_s, later.generate_s), _add(self.new_tokens, later.new_tokens))


def _add(a, b):
    return None if a is None and b is None else (a or 0) + (b or 0)


@dataclass
class ModelOutput:
    """One structured, checkable result. The same fields for every model family."""

    task: Task
    model: str
    raw_text: str
    reasoning: str | None = None
    labels: list[Label] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    findings: str | None = None
    impression: str | None = None
    boxes: list[Box] = field(default_factory=list)
    differentials: list[str] = field(default_factory=list)
    answer: str | None = None
    timings: Timings = field(default_factory=Timings)
    warnings: list[str] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    # classify: {"method", "source", "fitted_on", "raw_probabilities"} when `probabilities` are calibrated, else None
    calibration: dict | None = None
    disclaimer: str = DISCLAIMER
    model_notice: str | None = None  # what the checkpoint says of itself (its cxrlm.json "notice"): a demo model
    schema_version: str = SCHEMA_VERSION

    def merged_with(self, later: ModelOutput) -> ModelOutput:
        """This turn and a later one that builds on it, as one output (a report: the reasoning turn, then the
        report turn). The later turn's task, answer and sections win; this turn's reasoning (its <think>, or its
        whole answer when the model does not tag its thinking) leads the reasoning; text, labels, boxes and
        timings add up."""
        names = {label.name for label in self.labels}
        return replace(
            later,
            raw_text=f"{self.raw_text}\n\n{later.raw_text}",
            reasoning="\n\n".join(filter(None, (self.reasoning or self.answer, later.reasoning))) or None,
            labels=self.labels + [label for label in later.labels if label.name not in names],
            probabilities={**self.probabilities, **later.probabilities},
            findings=later.findings or self.findings,
            impression=later.impression or self.impression,
            boxes=self.boxes + later.boxes,
            differentials=self.differentials + later.differentials,
            timings=self.timings.plus(later.timings),
            warnings=list(dict.fromkeys(self.warnings + later.warnings)),  # the images' own warnings come twice
        )

    @property
    def vocabularies(self) -> dict[str, list[str]]:
        """The vocabularies each name in `probabilities` belongs to ("chexpert14", "nih14", or both)."""
        return {name: label_vocabularies(name) for name in self.probabilities}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timings"]["tokens_per_s"] = self.timings.tokens_per_s
        out["vocabularies"] = self.vocabularies
        return _finite(out)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def _finite(value):
    """JSON has no NaN: turn NaN/inf into None, tuples into lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def output_schema() -> dict:
    """The JSON schema of `ModelOutput.to_dict()` (cxrlm/schema/model_output.json)."""
    from importlib.resources import files

    return json.loads(files("cxrlm").joinpath("schema/model_output.json").read_text())
