"""A small synthetic dataset (generated PNGs + manifest) and fake models for the eval tests. No real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cxrlm.pathologies import CHEXPERT14
from cxrlm.types import Box, Label, ModelOutput

REPORTS = {
    "normal": {
        "findings": "The lungs are clear. No pleural effusion or pneumothorax.",
        "impression": "No acute cardiopulmonary abnormality.",
    },
    "cardio": {
        "findings": "The heart is enlarged. Small right pleural effusion.",
        "impression": "Cardiomegaly with a small right pleural effusion.",
    },
    "edema": {
        "findings": "Bilateral interstitial opacities and vascular congestion.",
        "impression": "Pulmonary edema.",
    },
}
POSITIVES = {"normal": ("No Finding",), "cardio": ("Cardiomegaly", "Pleural Effusion"), "edema": ("Edema",)}


def _labels(kind: str) -> dict:
    labels = {name: 0 for name in CHEXPERT14}
    labels.update(dict.fromkeys(POSITIVES[kind], 1))
    labels["Support Devices"] = None  # not labelled: must be skipped, not counted as negative
    return labels


def _image(kind: str, seed: int, size: int = 64) -> np.ndarray:
    """A blurry 'chest': two dark lungs, a bright heart whose width depends on the kind, plus seeded noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    pixels = 0.7 - 0.4 * (
        np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) / 0.03) + np.exp(-((x - 0.7) ** 2 + (y - 0.5) ** 2) / 0.03)
    )
    heart = 0.12 if kind == "cardio" else 0.06
    pixels += 0.5 * np.exp(-((x - 0.5) ** 2 / heart + (y - 0.65) ** 2 / 0.02))
    if kind == "edema":
        pixels += 0.15
    pixels += rng.normal(0, 0.03, pixels.shape)
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def make_dataset(root: Path, n_train: int = 6, n_test: int = 6) -> Path:
    """Images and a manifest (image paths relative to it) with train and test splits; returns the manifest."""
    kinds = ("normal", "cardio", "edema")
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_train + n_test):
        kind = kinds[i % 3]
        name = f"images/img{i:03d}.png"
        Image.fromarray(_image(kind, i)).save(root / name)
        boxes = []
        if kind == "cardio":
            boxes = [{"label": "Cardiomegaly", "xyxy": [16.0 + i % 2, 34.0, 48.0, 54.0], "kind": "finding"}]
        if kind == "edema":
            boxes = [
                {"label": "Edema", "xyxy": [8.0, 10.0, 30.0, 50.0], "kind": "finding"},
                {"label": "Edema", "xyxy": [34.0, 10.0, 56.0, 50.0], "kind": "finding"},
            ]
        lines.append(
            {
                "dataset": "synthetic",
                "study_id": f"s{i}",
                "patient_id": f"p{i}",
                "image": name,
                "view_position": "PA",
                "split": "train" if i < n_train else "test",
                "labels": _labels(kind),
                "source_labels": {},
                "boxes": boxes,
                "report": REPORTS[kind],
                "report_is_synthetic": True,
                "width": 64,
                "height": 64,
            }
        )
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


def records_by_image(manifest: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return {Path(r["image"]).name: r for r in rows}


class OracleModel:
    """Answers from the manifest itself: every metric should be perfect. Counts calls; can crash on purpose."""

    name = "oracle"
    template_version = "test/1"

    def __init__(self, manifest: Path, crash_after: int | None = None):
        self.records = records_by_image(manifest)
        self.calls = 0
        self.crash_after = crash_after

    def predict(self, image, task, *, phrase=None, max_new_tokens=None):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise KeyboardInterrupt  # a user's Ctrl-C in the middle of a run
        record = self.records[image.source]
        out = ModelOutput(task=task, model=self.name, raw_text="", image_size=image.size)
        if task == "report":
            out.findings, out.impression = record["report"]["findings"], record["report"]["impression"]
        elif task == "classify":
            out.probabilities = {n: 0.9 if record["labels"].get(n) == 1 else 0.1 for n in CHEXPERT14}
        elif task == "ground":
            out.boxes = [Box(phrase, tuple(b["xyxy"]), (0, 0, 0, 0)) for b in record["boxes"] if b["label"] == phrase]
        return out


class DimModel:
    """A weak deterministic model: answers from mean brightness only, labels without probabilities."""

    name = "dim"

    def __init__(self):
        self.batches = []

    def predict(self, image, task, *, phrase=None, max_new_tokens=None):
        bright = float(image.pixels.mean()) > 120
        out = ModelOutput(task=task, model=self.name, raw_text="heart is enlarged" if bright else "lungs are clear")
        if task == "report":
            out.findings = out.raw_text
        elif task == "classify":
            out.labels = [Label("Cardiomegaly")] if bright else [Label("No Finding")]
        elif task == "ground":
            out.boxes = [Box(phrase, (10.0, 10.0, 40.0, 40.0), (0, 0, 0, 0), score=0.5)]
        return out


class BatchingDimModel(DimModel):
    def predict_batch(self, images, task, *, phrases, max_new_tokens=None):
        self.batches.append(len(images))
        return [self.predict(img, task, phrase=p) for img, p in zip(images, phrases)]
