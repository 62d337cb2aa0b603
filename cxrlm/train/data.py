"""Training data: read the instruction JSONL files into `datasets.Dataset`s and load their images at batch time.

SFT rows carry `messages` (HF chat format) and `images` (paths); GRPO rows carry `prompt` (the user turn), `images`
and ground-truth columns for the rewards (`task`, `labels`, `boxes`, `report`, `answer`). Image paths are resolved
against the JSONL file's folder when relative. Images are decoded only when a batch is built, through
`cxrlm.io.load_image` (PNG, JPEG, DICOM), so training sees exactly the pixels inference sees. Not here: building
the JSONL (cxrlm.data.instructions does that).
"""

from __future__ import annotations

import json
from pathlib import Path

from cxrlm.errors import InputError

SFT_COLUMNS = ("messages", "images")
GRPO_COLUMNS = ("prompt", "images")


def read_jsonl(path: str | Path, required: tuple[str, ...], max_samples: int | None = None) -> list[dict]:
    """Rows of a JSONL file with their image paths made absolute; a one-line InputError for any bad row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training file {path} does not exist: build one with `cxrlm data instructions`")
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{number} is not valid JSON ({err.msg}): fix or drop that line") from None
            missing = [c for c in required if c not in row]
            if missing:
                raise InputError(f"{path}:{number} has no {missing[0]!r} column: is this a {_kind(required)} file?")
            row["images"] = [str(_resolve(path.parent, p, f"{path}:{number}")) for p in row.get("images") or []]
            rows.append(row)
            if max_samples and len(rows) >= max_samples:
                break
    if not rows:
        raise InputError(f"training file {path} has no rows")
    return rows


def _kind(required: tuple[str, ...]) -> str:
    return "SFT (messages)" if "messages" in required else "GRPO (prompt)"


def _resolve(folder: Path, image: str, where: str) -> Path:
    image_path = Path(image)
    image_path = image_path if image_path.is_absolute() else folder / image_path
    if not image_path.is_file():
        raise InputError(f"{where}: image {image} not found (paths are relative to the JSONL file's folder)")
    return image_path


def read_dataset(path: str | Path, required: tuple[str, ...], max_samples: int | None = None):
    from datasets import Dataset

    return Dataset.from_list(read_jsonl(path, required, max_samples))


def load_pil(path: str):
    from cxrlm.io import load_image

    return load_image(path).to_pil()


class ImageLoadingCollator:
    """Wraps a TRL collator: replaces each row's image paths by PIL images, lays out its turns as the model's family
    does at inference (`lay_out`, e.g. cxrlm.models.families.Family.lay_out), then calls it.

    TRL's vision collators (SFT) and GRPO's identity collator expect decoded images under `images`; keeping paths
    in the dataset keeps it small and lets the DataLoader's workers do the decoding.
    """

    def __init__(self, inner, lay_out=None):
        self.inner = inner
        self.lay_out = lay_out

    def __call__(self, examples: list[dict]):
        loaded = [{**ex, "images": [load_pil(p) if isinstance(p, str) else p for p in ex.get("images") or []]}
                  for ex in examples]
        if self.lay_out:
            for ex in loaded:
                ex.update({key: self.lay_out(ex[key]) for key in ("messages", "prompt") if key in ex})
        return self.inner(loaded)
