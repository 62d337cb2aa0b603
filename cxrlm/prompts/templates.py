"""Prompt dialects: the exact words each model family was trained to answer, per task, as data.

A dialect is picked by the model profile (cxrlm/models/profiles.py). Templates are versioned: the version is
recorded with every result so that evaluation runs can say which prompts produced them.
"""

from dataclasses import dataclass, replace

from cxrlm.types import Task


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
    think_tags: bool = True  # answers come as <think>...</think><answer>...</answer>
    label_list_after: str = ""  # the label list starts after the first occurrence of this text ("" = at once)


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

# RadVLM (LLaVA-OneVision-7B fine-tune), prompts from its instruction generator: it answers in sentences
# ("The following abnormalities are present: edema and cardiomegaly.") with boxes as [0.12, 0.30, 0.45, 0.80].
RADVLM = Dialect(
    name="radvlm",
    version="radvlm/1",
    reason="Are there any abnormalities on this Chest X-ray?",
    report="Write a radiology report for this Chest X-ray.",
    differentials="What are the possible differential diagnoses for this Chest X-ray?",
    structured_report="Create a structured radiology report for this X-ray.",
    classify_question="Is there {label} on this Chest X-ray? Answer yes or no.",
    ground="Please locate the following sentence: {phrase}",
    think_tags=False,
    label_list_after=":",
)

# MedGemma (Gemma 3): the model card's system prompt and its plain instructions; no reasoning tags.
MEDGEMMA = Dialect(
    name="medgemma",
    version="medgemma/1",
    system="You are an expert radiologist.",
    reason="List the abnormalities on this chest X-ray as a comma-separated list of findings.",
    report="Describe this X-ray. Write the findings and impression of a radiology report.",
    differentials="Provide differentials for this chest X-ray.",
    structured_report="Write a structured radiology report for this chest X-ray.",
    classify_question="Is there {label} on this chest X-ray? Answer yes or no.",
    ground="Locate {phrase} on this chest X-ray. Answer with a bounding box [x1, y1, x2, y2] as fractions of the "
           "image width and height.",
    think_tags=False,
)

# MedGemma 1.5 grounds in its own convention (cxrlm.box_formats "int1000_yxyx"): a JSON list of
# {"box_2d": [y0, x0, y1, x1], "label": ...} in 0-1000, as Google's anatomy-localization notebook asks for it
# (github.com/Google-Health/medgemma, notebooks/cxr_anatomy_localization_with_hugging_face.ipynb), sides being the
# patient's. The other tasks are asked as for MedGemma 1.
MEDGEMMA_1_5 = replace(
    MEDGEMMA,
    name="medgemma-1.5",
    version="medgemma-1.5/1",
    ground="Locate {phrase} on this chest X-ray. Left and right are the patient's sides. Output a JSON list of "
           'objects {{"box_2d": [y0, x0, y1, x1], "label": "{phrase}"}}, where (y0, x0) is the top-left and '
           "(y1, x1) the bottom-right corner, with coordinates normalized to the range [0, 1000] of the image.",
)

# Qwen3-VL-Instruct: grounding answers are JSON {"bbox_2d": [x1, y1, x2, y2], "label": ...} in 0-1000 units.
QWEN3_VL = Dialect(
    name="qwen3-vl",
    version="qwen3-vl/1",
    reason="Find abnormalities and support devices on this chest X-ray. Answer with a comma-separated list.",
    report="Write the findings and impression of a radiology report for this chest X-ray.",
    differentials="Provide differentials.",
    structured_report="Write a structured report.",
    classify_question="Is there {label} on this chest X-ray? Answer yes or no.",
    ground="Locate {phrase} in this chest X-ray, and output its bbox coordinates in JSON format.",
    think_tags=False,
)

# M4CXR (Mistral [INST] turns, remote code): "radiology image: <image>" opens the first turn (the remote-code
# engine writes it), answers are plain text, boxes are 0-100 integers. Its two-turn chain of thought (which findings
# are present, then the report) is what every report is (cxrlm.chat.Session.report): the reasoning turn first.
_M4CXR_FINDINGS = (
    "Enlarged Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Edema, Consolidation, Pneumonia, "
    "Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture, Support Devices"
)
M4CXR = Dialect(
    name="m4cxr",
    version="m4cxr/1",
    reason=f"Which of the following findings are present in the radiology image? Findings: {_M4CXR_FINDINGS}",
    report="Based on the previous conversation, provide a description of the findings in the radiology image.",
    differentials="What are the possible differential diagnoses for the radiology image?",
    structured_report="Provide a description of the findings in the radiology image.",
    classify_question="Is {label} present in the radiology image?",
    ground="Provide the bounding box coordinate of the region this phrase describes: {phrase}",
    think_tags=False,
)

DIALECTS = {d.name: d for d in (NV_REASON, RADVLM, MEDGEMMA, MEDGEMMA_1_5, QWEN3_VL, M4CXR)}


def task_prompt(dialect: Dialect, task: Task | str, phrase: str | None = None) -> str:
    """The user text for one task (or "differentials", "structured_report"). `ground` needs the phrase to locate."""
    if task == Task.GROUND:
        if not phrase:
            raise ValueError("grounding needs a phrase, e.g. 'right lung' or 'pleural effusion'")
        return dialect.ground.format(phrase=phrase)
    if task == Task.CLASSIFY:
        raise ValueError("classify is asked per label: use dialect.classify_question")
    return getattr(dialect, task)
