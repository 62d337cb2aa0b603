"""Tiny synthetic training sets in the instruction-builder's JSONL format (SFT and GRPO), for the train tests.

Images are small random PNGs written next to the JSONL; nothing comes from real data.
"""

import json
from pathlib import Path

REASON_PROMPT = "Find abnormalities and support devices."
GROUND_PROMPT = "Locate the right lung on this chest X-ray. Answer with a bounding box [x1, y1, x2, y2]."
# Prompts of very different lengths in one GRPO batch: TRL must pad the image-token map as it pads the tokens.
REPORT_PROMPT = ("Write the findings and impression of a radiology report for this chest X-ray. Describe the lungs, "
                 "pleura, heart, mediastinum, bones and support devices, then give a one-line impression.")


def write_png(path: Path, seed: int, size=(64, 56)) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8)).save(path)
    return path.name


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def write_sft(folder: Path, n: int = 4) -> Path:
    rows = []
    for i in range(n):
        image = write_png(folder / f"sft{i}.png", i)
        answer = "<think> Lungs clear. Heart normal. </think><answer> No Finding </answer>"
        rows.append({"messages": [_user(REASON_PROMPT), {"role": "assistant", "content": [{"type": "text",
                     "text": answer}]}], "images": [image], "task": "reason", "synthetic": True})
    return _write(folder / "sft.jsonl", rows)


def write_grpo(folder: Path, n: int = 4, size=(224, 224)) -> Path:
    """Rows cycle through reason, ground and report tasks, with their ground-truth columns.

    224 px images give 64 image tokens: enough that a misaligned image-token map crosses the padding."""
    rows = []
    for i in range(n):
        image = write_png(folder / f"grpo{i}.png", 100 + i, size=size)
        task = ("reason", "ground", "report")[i % 3]
        text = {"reason": REASON_PROMPT, "ground": GROUND_PROMPT, "report": REPORT_PROMPT}[task]
        rows.append({
            "prompt": [_user(text)], "images": [image], "task": task,
            "labels": ["Cardiomegaly"] if task == "reason" else None,
            "boxes": [{"label": "right lung", "xyxy_norm": [0.1, 0.2, 0.5, 0.8]}] if task == "ground" else None,
            "report": "Findings: Enlarged heart. Impression: Cardiomegaly." if task == "report" else None,
            "answer": None,
            "box_format": "int100",  # as `cxrlm data instructions` records it: TRL hands it to the box rewards
        })
    return _write(folder / "grpo.jsonl", rows)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
