"""Turn a model's raw text into checkable structure: reasoning, labels, boxes, report sections, differentials.

Every parser is tolerant: missing or unclosed tags, truncated output, misspelled or unknown labels and boxes in
the usual formats never raise; what could not be understood is reported in `warnings` instead.
"""

import re
from dataclasses import dataclass, field

from cxrlm import box_formats
from cxrlm.pathologies import normalize_label
from cxrlm.types import Box, Task

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
_NUMBER = r"-?\d+(?:\.\d+)?"
# Box syntaxes, read in any format's scale and order (cxrlm.box_formats): `[a, b, c, d]` (most families) and
# `(a,b),(c,d)`, two corner points (CheXOne: `<|ref|>name<|/ref|><|box|>(x1,y1),(x2,y2)<|/box|>`).
_BOX = re.compile(
    rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
    rf"|\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
)
_BOX_LABEL = re.compile(r'"label"\s*:\s*"([^"]*)"')
_REF_LABEL = re.compile(r"<\|ref\|>([^<]*)<\|/ref\|>\s*<\|box\|>\s*$")  # CheXOne: the name before the box
_BOXED = re.compile(r"\\boxed\s*\{")
_TEXT_MACRO = re.compile(r"\\text\{([^{}]*)\}")  # \boxed{\text{Edema}}: LaTeX around plain words
_SECTION = re.compile(r"^\s*(findings|impression)\s*:\s*", re.IGNORECASE | re.MULTILINE)
_LIST_SPLIT = re.compile(r"[,;\n]|\band\b", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*(.+)$", re.MULTILINE)


@dataclass
class ReasonedAnswer:
    reasoning: str | None
    answer: str
    warnings: list[str] = field(default_factory=list)


def split_reasoning(text: str) -> ReasonedAnswer:
    """Split `<think>...</think><answer>...</answer>`; missing or unclosed tags fall back sensibly. Without an
    `<answer>` tag, a final `\\boxed{...}` (CheXOne's reasoning mode) is the answer and the text before it the
    reasoning."""
    warnings = []
    think = _THINK.search(text)
    answer = _ANSWER.search(text)
    if think and "</think>" not in text.lower():
        warnings.append("reasoning was cut off before </think> (raise --max-new-tokens)")
    rest = text[think.end():] if think else text
    boxed = last_boxed(rest) if answer is None else None
    if boxed is not None:
        before, answer_text = boxed
        reasoning = "\n\n".join(filter(None, (think.group(1).strip() if think else "", _TAG.sub("", before).strip())))
        return ReasonedAnswer(reasoning=reasoning or None, answer=answer_text.strip(), warnings=warnings)
    if answer is None:
        warnings.append("no <answer> tag: labels were read from the text after the reasoning")
        answer_text = _TAG.sub("", rest)
    else:
        if "</answer>" not in text.lower():
            warnings.append("answer was cut off before </answer>")
        answer_text = answer.group(1)
    reasoning = think.group(1).strip() if think else None
    return ReasonedAnswer(reasoning=reasoning or None, answer=answer_text.strip(), warnings=warnings)


def last_boxed(text: str) -> tuple[str, str] | None:
    """(text before it, content) of the last `\\boxed{...}` in the text, braces inside it balanced; an unclosed
    one runs to the end of the text (a cut-off answer). None when there is none."""
    starts = list(_BOXED.finditer(text))
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for index in range(start.end(), len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[: start.start()], _TEXT_MACRO.sub(r"\1", text[start.end(): index])
    return text[: start.start()], _TEXT_MACRO.sub(r"\1", text[start.end():])


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
    box_format: str = box_formats.AUTO,
    view: tuple[float, float, float, float] | None = None,
    score_of=None,
) -> list[Box]:
    """Every `[a, b, c, d]` in the text, read in `box_format` (cxrlm.box_formats), as boxes in original pixels.

    Pixel formats count pixels of the model's input frame `input_size` (Qwen2.5-VL), of the original image when not
    given. `auto` takes all-within-0-1 values as norm1, else pixels. `view` is the region of the original image, in
    its pixels, that the model's coordinates span (it reaches outside the image when the model saw it padded,
    inside when cropped; the whole image when not given). Degenerate boxes (zero area) are dropped.
    `score_of(start, end)`, if given, scores the box written at those character offsets of the text.
    """
    fixed = None if box_formats.check(box_format) == box_formats.AUTO else box_formats.get(box_format)
    boxes = []
    for match in _BOX.finditer(text):
        values = [float(v) for v in match.groups() if v is not None]
        norm = (fixed or box_formats.guess(values)).read(values, input_size or image_size)
        norm = box_formats.from_view(norm, view, image_size)
        before = text[max(0, match.start() - 80): match.start()]
        label = (_REF_LABEL.search(before) or _BOX_LABEL.search(text[match.end(): match.end() + 80])
                 or _BOX_LABEL.search(before))
        score = score_of(match.start(), match.end()) if score_of else None
        box = Box.from_norm(label.group(1).strip() if label else default_label, norm, image_size, score=score)
        if box.xyxy_norm[2] > box.xyxy_norm[0] and box.xyxy_norm[3] > box.xyxy_norm[1]:
            boxes.append(box)
    return boxes


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
