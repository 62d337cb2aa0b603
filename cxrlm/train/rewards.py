"""Verifiable rewards for GRPO on chest X-ray tasks: small pure functions picked by name from `REWARDS`.

The contract (the one TRL's GRPOTrainer calls): `reward(completions, **columns) -> list[float | None]`, one value
per completion. `completions` are strings, or conversational lists of messages (the last assistant turn is
scored). `columns` are the dataset's columns, one value per completion (`task`, `labels`, `boxes`, `report`,
`images`, ...), plus TRL's extras (`prompts`, `completion_ids`, `trainer_state`...), which are ignored unless used.
A reward returns None for a completion of a task it does not score (the `task` column), so one GRPO batch can mix
tasks: TRL treats None as NaN and leaves it out of that reward's weighted sum.

Parsing and scoring are not re-implemented here: answers go through `cxrlm.prompts.parsers`, box matching through
`cxrlm.metrics.boxes`, report labelling through `cxrlm.data.labeler`. Not here: which rewards a run uses and
their weights (the GRPO recipe says that).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from cxrlm import box_formats
from cxrlm.pathologies import normalize_label
from cxrlm.prompts import parsers
from cxrlm.types import Task

# Tasks a reward scores by default; None scores every row. A recipe can override with `reward_kwargs`.
LABEL_TASKS = (Task.REASON,)
BOX_TASKS = (Task.GROUND,)
REPORT_TASKS = (Task.REPORT,)
ANSWER_TASKS = (Task.CLASSIFY, Task.VQA)

# Exactly one reasoning block, then exactly one answer block, nothing else around them.
_NO_TAG = r"((?:(?!</?think>|</?answer>).)*)"
_STRICT_FORMAT = re.compile(rf"\s*<think>{_NO_TAG}</think>\s*<answer>{_NO_TAG}</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_WORD = re.compile(r"\S+")

Reward = Callable[..., list[float | None]]


# ---------------------------------------------------------------- helpers


def completion_text(completion) -> str:
    """The text of one completion: a string, or the last assistant message of a conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    for message in reversed(list(completion or [])):
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "".join(part.get("text") or "" for part in content or [] if part.get("type", "text") == "text")
    return ""


def _rows(completions: Sequence, columns: dict, tasks: Sequence[str] | None):
    """(index, text) of the completions this reward scores: those whose `task` is in `tasks`."""
    task_column = columns.get("task")
    for i, completion in enumerate(completions):
        if tasks is None or task_column is None or task_column[i] in tasks:
            yield i, completion_text(completion)


def _scored(completions: Sequence, columns: dict, tasks, score: Callable[[int, str], float | None]) -> list:
    out: list[float | None] = [None] * len(completions)
    for i, text in _rows(completions, columns, tasks):
        out[i] = score(i, text)
    return out


def is_strict_format(text: str) -> bool:
    match = _STRICT_FORMAT.fullmatch(text or "")
    return bool(match and match.group(1).strip() and match.group(2).strip())


def _set_f1(reference: set, predicted: set) -> float:
    from cxrlm.metrics.labels import precision_recall_f1

    if not reference and not predicted:
        return 1.0
    tp = len(reference & predicted)
    return precision_recall_f1(tp, len(predicted - reference), len(reference - predicted))["f1"]


def _reference_labels(value) -> set[str]:
    """Ground-truth CheXpert names; an empty list means a normal study, i.e. {"No Finding"}."""
    names = {normalize_label(str(v)) or str(v) for v in (value or [])}
    return names or {"No Finding"}


def _predicted_labels(text: str) -> tuple[set[str], int]:
    """(CheXpert names in the answer, number of answer items that are no label)."""
    names, unknown = parsers.parse_labels(parsers.split_reasoning(text).answer)
    return set(names), len(unknown)


# ---------------------------------------------------------------- format


def format_reward(completions, tasks: Sequence[str] | None = None, **columns) -> list[float | None]:
    """1 when the completion is exactly `<think>...</think><answer>...</answer>` (both non-empty), else 0."""
    return _scored(completions, columns, tasks, lambda i, text: float(is_strict_format(text)))


def tag_count_reward(completions, tasks: Sequence[str] | None = None, **columns) -> list[float | None]:
    """0.25 for each of the four tags that appears exactly once: a dense signal on the way to the strict format."""
    return _scored(completions, columns, tasks, lambda i, text: sum((0.25 for tag in _TAGS if text.count(tag) == 1), 0.0))


# ---------------------------------------------------------------- labels


def _label_score(metric: Callable[[set, set], float], tasks, completions, columns) -> list[float | None]:
    references = columns.get("labels")

    def score(i: int, text: str) -> float | None:
        if references is None or references[i] is None:
            return None
        if not is_strict_format(text):  # hard gate: a right answer in a broken format earns nothing
            return 0.0
        predicted, n_unknown = _predicted_labels(text)
        # Items that are no CheXpert label count as wrong answers, so padding the answer with noise costs.
        predicted |= {f"<unknown {k}>" for k in range(n_unknown)}
        return metric(_reference_labels(references[i]), predicted)

    return _scored(completions, columns, tasks, score)


def _jaccard(reference: set, predicted: set) -> float:
    union = reference | predicted
    return len(reference & predicted) / len(union) if union else 1.0


def label_jaccard_reward(completions, tasks: Sequence[str] | None = LABEL_TASKS, **columns) -> list[float | None]:
    """Jaccard index of predicted and reference CheXpert-14 label sets; 0 when the format is broken."""
    return _label_score(_jaccard, tasks, completions, columns)


def label_f1_reward(completions, tasks: Sequence[str] | None = LABEL_TASKS, **columns) -> list[float | None]:
    """F1 of predicted vs reference CheXpert-14 label sets; 0 when the format is broken."""
    return _label_score(_set_f1, tasks, completions, columns)


# ---------------------------------------------------------------- length and repetition


def length_reward(
    completions,
    tasks: Sequence[str] | None = None,
    min_length: int = 8,
    max_length: int = 512,
    buffer: int = 128,
    **columns,
) -> list[float | None]:
    """Soft length shaping: 0 inside [min_length, max_length] tokens, falling linearly to -1 over `buffer` tokens
    outside it (DAPO's soft over-long punishment, mirrored for over-short). Tokens are `completion_ids` when TRL
    passes them, whitespace-separated words otherwise."""
    ids = columns.get("completion_ids")

    def score(i: int, text: str) -> float:
        length = len(ids[i]) if ids is not None else len(_WORD.findall(text))
        if length > max_length:
            return -min(1.0, (length - max_length) / buffer)
        if length < min_length:
            return -min(1.0, (min_length - length) / max(1, min(buffer, min_length)))
        return 0.0

    return _scored(completions, columns, tasks, score)


def repetition_reward(
    completions, tasks: Sequence[str] | None = None, ngram: int = 3, max_penalty: float = -1.0, **columns
) -> list[float | None]:
    """Penalty for repeated word n-grams: max_penalty * (1 - distinct n-grams / n-grams); 0 for short texts."""

    def score(i: int, text: str) -> float:
        words = [w.lower() for w in _WORD.findall(text)]
        grams = [tuple(words[k: k + ngram]) for k in range(len(words) - ngram + 1)]
        if not grams:
            return 0.0
        return max_penalty * (1 - len(set(grams)) / len(grams)) + 0.0  # + 0.0: no -0.0 in logs

    return _scored(completions, columns, tasks, score)


# ---------------------------------------------------------------- grounding


def _image_size(images) -> tuple[int, int] | None:
    """(width, height) of the first image of a row, from its header only; None when there is no image."""
    first = (images or [None])[0]
    if first is None:
        return None
    if hasattr(first, "size") and not isinstance(first, str):
        return tuple(first.size)
    from PIL import Image

    with Image.open(first) as im:
        return im.size


def _reference_boxes(boxes, size: tuple[int, int] | None) -> list[list[float]] | None:
    """Reference boxes in 0-1 coordinates; None when a pixel box cannot be normalised (no image size)."""
    out = []
    for box in boxes or []:
        if box.get("xyxy_norm") is not None:
            out.append([float(v) for v in box["xyxy_norm"]])
        elif box.get("xyxy") is not None and size is not None:
            x1, y1, x2, y2 = (float(v) for v in box["xyxy"])
            out.append([x1 / size[0], y1 / size[1], x2 / size[0], y2 / size[1]])
        else:
            return None
    return out


def _box_score(metric: Callable[[list, list], float], tasks, box_format, completions, columns) -> list:
    references, images, sizes = columns.get("boxes"), columns.get("images"), columns.get("image_size")
    # How the answers write boxes: a recipe setting (one name, which overrides the column), else the dataset's
    # `box_format` column (the instruction builder records the format its answers, so the trained policy, use),
    # else a guess per box ("auto").
    if isinstance(box_format, str):
        formats = [box_formats.check(box_format)] * len(completions)
    else:
        formats = [name or box_formats.AUTO for name in (box_format or [None] * len(completions))]

    def score(i: int, text: str) -> float | None:
        if references is None or references[i] is None:
            return None
        if sizes is not None and sizes[i]:  # the instruction builder records (width, height)
            size = tuple(sizes[i])
        else:
            size = _image_size(images[i]) if images is not None else None
        reference = _reference_boxes(references[i], size)
        if reference is None:
            return None
        # Predictions are clipped to the image by Box.from_norm, so out-of-range boxes cost overlap, not a crash.
        predicted = [list(b.xyxy_norm) for b in parsers.parse_boxes(text, size or (1, 1), box_format=formats[i])]
        return metric(reference, predicted)

    return _scored(completions, columns, tasks, score)


def box_iou_reward(
    completions, tasks: Sequence[str] | None = BOX_TASKS, box_format: str | Sequence | None = None, **columns
) -> list[float | None]:
    """Hungarian-matched IoU of predicted vs reference boxes (`cxrlm.metrics.boxes.item_iou`); extra or missing
    boxes count as IoU 0."""
    from cxrlm.metrics.boxes import item_iou

    return _box_score(item_iou, tasks, box_format, completions, columns)


def box_f1_reward(
    completions, tasks: Sequence[str] | None = BOX_TASKS, box_format: str | Sequence | None = None, **columns
) -> list[float | None]:
    """Hungarian-matched soft F1 of predicted vs reference boxes (`cxrlm.metrics.boxes.soft_f1`)."""
    from cxrlm.metrics.boxes import soft_f1

    return _box_score(lambda ref, pred: soft_f1(ref, pred)["f1"], tasks, box_format, completions, columns)


# ---------------------------------------------------------------- reports


def _positives(labelled: dict) -> set[str]:
    return {name for name, value in labelled.items() if value == 1}


def report_ce_f1_reward(completions, tasks: Sequence[str] | None = REPORT_TASKS, **columns) -> list[float | None]:
    """Clinical-efficacy F1 of one report: the rule-based labeler's positive CheXpert-14 findings of the generated
    report vs those of the reference `report` column. Both without findings: 1."""
    from cxrlm.data.labeler import label_reports

    references = columns.get("report")
    rows = [(i, text) for i, text in _rows(completions, columns, tasks)
            if references is not None and references[i]]
    out: list[float | None] = [None] * len(completions)
    if not rows:
        return out
    generated = [parsers.split_reasoning(text).answer for _, text in rows]
    labelled = label_reports(generated + [references[i] for i, _ in rows])
    for k, (i, _) in enumerate(rows):
        predicted, reference = _positives(labelled[k]) - {"No Finding"}, _positives(labelled[len(rows) + k])
        out[i] = _set_f1(reference - {"No Finding"}, predicted)
    return out


# ---------------------------------------------------------------- short answers


def answer_match_reward(completions, tasks: Sequence[str] | None = ANSWER_TASKS, **columns) -> list[float | None]:
    """1 when the answer matches the `answer` column as `cxrlm.metrics.vqa.answer_matches` scores VQA (yes/no by
    meaning, other answers by normalised text); else 0."""
    from cxrlm.metrics.vqa import answer_matches

    references = columns.get("answer")

    def score(i: int, text: str) -> float | None:
        if references is None or not references[i]:
            return None
        return float(answer_matches(references[i], parsers.split_reasoning(text).answer))

    return _scored(completions, columns, tasks, score)


# ---------------------------------------------------------------- registry

REWARDS: dict[str, Reward] = {
    "format": format_reward,
    "tag_count": tag_count_reward,
    "label_jaccard": label_jaccard_reward,
    "label_f1": label_f1_reward,
    "length": length_reward,
    "repetition": repetition_reward,
    "box_iou": box_iou_reward,
    "box_f1": box_f1_reward,
    "report_ce_f1": report_ce_f1_reward,
    "answer_match": answer_match_reward,
}


class NamedReward:
    """A registered reward with its settings bound, named as in the registry (TRL logs `rewards/<name>/mean`).

    A class rather than functools.partial: TRL names a partial after the wrapped function, and an instance of a
    module-level class pickles (for multi-process data loading) where a closure would not.
    """

    def __init__(self, name: str, func: Reward, settings: dict):
        self.__name__ = name
        self.func, self.settings = func, settings

    def __call__(self, completions, **columns) -> list[float | None]:
        return self.func(completions, **{**columns, **self.settings})


def get_reward(name: str, **settings) -> NamedReward:
    """The reward called `name`, with `settings` (e.g. max_length for `length`) bound."""
    import inspect

    from cxrlm.errors import ConfigError

    if name not in REWARDS:
        raise ConfigError(f"unknown reward {name!r}; choose from: {', '.join(REWARDS)}")
    func = REWARDS[name]
    accepted = set(inspect.signature(func).parameters) - {"completions", "columns"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ConfigError(f"reward {name!r} has no setting {unknown[0]!r}; it takes: {', '.join(sorted(accepted))}")
    return NamedReward(name, func, settings)
