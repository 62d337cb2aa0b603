"""Turn a model's raw text into checkable structure: reasoning, labels, boxes, report sections, differentials.

Every parser is tolerant: missing or unclosed tags, truncated output, misspelled or unknown labels and boxes in
the usual formats never raise; what could not be understood is reported in `warnings` instead.
"""

import re
from dataclasses import dataclass, field

from cxrlm.pathologies import normalize_label
from cxrlm.types import Box, Task

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
_NUMBER = r"-?\d+(?:\.\d+)?"
_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
_BOX_LABEL = re.compile(r'"label"\s*:\s*"([^"]*)"')
_SECTION = re.compile(r"^\s*(findings|impression)\s*:\s*", re.IGNORECASE | re.MULTILINE)
_LIST_SPLIT = re.compile(r"[,;\n]|\band\b", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*(.+)$", re.MULTILINE)


@dataclass
class ReasonedAnswer:
    reasoning: str | None
    answer: str
    warnings: list[str] = field(default_factory=list)


def split_reasoning(text: str) -> ReasonedAnswer:
    """Split `<think>...</think><answer>...</answer>`; missing or unclosed tags fall back sensibly."""
    warnings = []
    think = _THINK.search(text)
    answer = _ANSWER.search(text)
    if think and "</think>" not in text.lower():
        warnings.append("reasoning was cut off before </think> (raise --max-new-tokens)")
    if answer is None:
        warnings.append("no <answer> tag: labels were read from the text after the reasoning")
        rest = text[think.end():] if think else text
        answer_text = _TAG.sub("", rest)
    else:
        if "</answer>" not in text.lower():
            warnings.append("answer was cut off before </answer>")
        answer_text = answer.group(1)
    reasoning = think.group(1).strip() if think else None
    return ReasonedAnswer(reasoning=reasoning or None, answer=answer_text.strip(), warnings=warnings)


def parse_labels(answer: str) -> tuple[list[str], list[str]]:
    """CheXpert-14 names in the order given (deduplicated), and the items that matched no label."""
    labels, unknown = [], []
    for item in _LIST_SPLIT.split(answer):
        item = item.strip(" .:-*\t")
        if not item:
            continue
        name = normalize_label(item)
        if name is None:
            unknown.append(item)
        elif name not in labels:
            labels.append(name)
    if "No Finding" in labels and len(labels) > 1:  # a finding overrides "No Finding"
        labels.remove("No Finding")
    return labels, unknown


def parse_boxes(
    text: str,
    image_size: tuple[int, int],
    input_size: tuple[int, int] | None = None,
    default_label: str = "",
    box_format: str = "auto",
    view: tuple[float, float, float, float] | None = None,
) -> list[Box]:
    """Every `[x1, y1, x2, y2]` in the text, as boxes in pixels of the original image.

    Formats: `norm1` (0-1 floats, RadVLM), `int100` (0-100 integers, M4CXR), `int1000` (0-1000 integers,
    Qwen3-VL), `pixels` (absolute pixels of the model's input frame `input_size`, Qwen2.5-VL; of the original image
    when not given). `auto` takes all-≤1 values as norm1, else pixels. `view` is the region of the original image,
    in its pixels, that the model's coordinates span (it reaches outside the image when the model saw it padded,
    inside when cropped; the whole image when not given). Degenerate boxes (zero area) are dropped.
    """
    boxes = []
    for match in _BOX.finditer(text):
        values = [float(v) for v in match.groups()]
        norm = _to_normalized(values, box_format, input_size or image_size)
        if norm is None:
            continue
        if view is not None:
            norm = _view_to_image(norm, view, image_size)
        label = _BOX_LABEL.search(text[match.end(): match.end() + 80]) or _BOX_LABEL.search(
            text[max(0, match.start() - 80): match.start()]
        )
        box = Box.from_norm(label.group(1) if label else default_label, norm, image_size)
        if box.xyxy_norm[2] > box.xyxy_norm[0] and box.xyxy_norm[3] > box.xyxy_norm[1]:
            boxes.append(box)
    return boxes


def _to_normalized(values: list[float], box_format: str, frame: tuple[int, int]) -> list[float] | None:
    if box_format == "auto":
        box_format = "norm1" if all(0 <= v <= 1 for v in values) else "pixels"
    if box_format == "norm1":
        return values
    if box_format == "int100":
        return [v / 100 for v in values]
    if box_format == "int1000":
        return [v / 1000 for v in values]
    if box_format == "pixels":
        width, height = frame
        return [values[0] / width, values[1] / height, values[2] / width, values[3] / height]
    raise ValueError(f"unknown box format {box_format!r}")


def _view_to_image(norm: list[float], view, image_size: tuple[int, int]) -> list[float]:
    """Coordinates relative to `view` (x0, y0, x1, y1 in original pixels) -> relative to the original image."""
    x0, y0, x1, y1 = view
    width, height = image_size
    xs = [(x0 + v * (x1 - x0)) / width for v in norm[0::2]]
    ys = [(y0 + v * (y1 - y0)) / height for v in norm[1::2]]
    return [xs[0], ys[0], xs[1], ys[1]]


def parse_report(text: str) -> tuple[str | None, str | None]:
    """(findings, impression) from 'Findings: ... Impression: ...' text; untitled text counts as findings."""
    body = _TAG.sub("", text)
    parts = _SECTION.split(body)
    if len(parts) == 1:
        body = body.strip()
        return (body or None), None
    sections = {"findings": parts[0].strip() or None, "impression": None}
    for name, content in zip(parts[1::2], parts[2::2], strict=True):
        sections[name.lower()] = content.strip() or None
    return sections["findings"], sections["impression"]


def label_list(answer: str, after: str = "") -> str:
    """The part of a sentence answer that lists labels ("The following are present: edema and ...")."""
    return answer.split(after, 1)[1] if after and after in answer else answer


def answer_task(text: str, label_list_after: str = "", has_boxes: bool = False) -> Task:
    """What a free answer carries, so that its structured fields get filled: report sections -> report;
    <think>/<answer> tags or nothing but label names -> reason; boxes -> ground; anything else -> chat."""
    answer = split_reasoning(text).answer
    if _SECTION.search(answer):
        return Task.REPORT
    names, unknown = parse_labels(label_list(answer, label_list_after))
    if _TAG.search(text) or (names and not unknown):
        return Task.REASON
    return Task.GROUND if has_boxes else Task.CHAT


def parse_list(text: str) -> list[str]:
    """Numbered or bulleted items ("1. Pneumonia", "- Edema"); a plain comma list otherwise."""
    body = _TAG.sub("", text)
    items = [m.group(1).strip() for m in _LIST_ITEM.finditer(body)]
    if not items:
        items = [part.strip().strip(".").strip() for part in body.split(",")]
    return [item for item in items if item]


def parse_yes_no(text: str) -> bool | None:
    word = re.match(r"\W*(yes|no|true|false|present|absent)\b", text.strip(), re.IGNORECASE)
    if not word:
        return None
    return word.group(1).lower() in ("yes", "true", "present")
