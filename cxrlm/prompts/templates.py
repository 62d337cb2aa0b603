"""Prompt dialects: the exact words each model family was trained to answer, per task, as data.

A dialect is picked by the model profile (cxrlm/models/profiles.py). Templates are versioned: the version is
recorded with every result so that evaluation runs can say which prompts produced them.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str
    version: str
    reason: str
    report: str
    differentials: str
    structured_report: str
    classify_question: str  # per-label yes/no question, scored by the likelihood of "yes"
    ground: str
    system: str | None = None


NV_REASON = Dialect(
    name="nv-reason",
    version="nv-reason/1",
    # NV-Reason-CXR-3B: one user turn with the image; answers <think>...</think><answer>Label, Label</answer>.
    reason="Find abnormalities and support devices.",
    report="Write the findings and impression of a radiology report for this chest X-ray.",
    differentials="Provide differentials.",
    structured_report="Write a structured report.",
    classify_question="Is there {label} on this chest X-ray? Answer yes or no.",
    ground="Locate {phrase} on this chest X-ray. Answer with a bounding box [x1, y1, x2, y2].",
)

DIALECTS = {d.name: d for d in (NV_REASON,)}


def task_prompt(dialect: Dialect, task: str, phrase: str | None = None) -> str:
    """The user text for one task. `ground` needs the phrase to locate."""
    if task == "ground":
        if not phrase:
            raise ValueError("grounding needs a phrase, e.g. 'right lung' or 'pleural effusion'")
        return dialect.ground.format(phrase=phrase)
    if task == "classify":
        raise ValueError("classify is asked per label: use dialect.classify_question")
    return getattr(dialect, task)
