"""Baselines that every evaluation reports next to the model, so a number can be read as "better than trivial".

Each baseline answers like a model (`name`, `tasks`, `predict(image, task, phrase=...) -> ModelOutput`), so the
runner scores it with the same code:

- constant-normal: the same normal report for every image, and "No Finding" as the only label.
- label-prior: every label's probability is its prevalence among the labelled training images (AUROC 0.5 by
  construction; it shows what F1 a model gets for free from class balance).
- nearest-neighbour: copies the report and labels of the most similar training image. Similarity is the cosine
  of 32x32 thumbnails (area-averaged, mean-centred, so it is the Pearson correlation of the thumbnails): a cheap
  image embedding that picks up view, size and gross density, not disease. Unknown neighbour labels fall back
  to the training prevalence.
- mean-box: for a phrase, the mean training box of that finding in image-relative coordinates (0-1), scaled to
  the test image; the mean of all training boxes when the finding never appears in training.

Training data: manifest records of the training split (they need images for nearest-neighbour, labels for
label-prior, boxes with width/height for mean-box). A baseline without the training data it needs is not built,
and `build_baselines` says why in its notes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from cxrlm.pathologies import CLASSIFY_LABELS, normalize_label, reference_labels
from cxrlm.types import Box, Label, ModelOutput, Task, XrayImage

NORMAL_FINDINGS = (
    "The lungs are clear. There is no pleural effusion or pneumothorax. "
    "The cardiomediastinal silhouette is within normal limits. No acute osseous abnormality."
)
NORMAL_IMPRESSION = "No acute cardiopulmonary abnormality."
THUMBNAIL = 32


def _output(name: str, task: str, image: XrayImage, **fields) -> ModelOutput:
    out = ModelOutput(task=task, model=name, raw_text="", image_size=image.size, **fields)
    out.raw_text = " ".join(filter(None, (out.findings, out.impression))) or ""
    return out


def _label_output(name: str, image: XrayImage, probabilities: dict[str, float]) -> ModelOutput:
    present = [Label(n, p) for n, p in probabilities.items() if p >= 0.5]
    return _output(name, Task.CLASSIFY, image, probabilities=dict(probabilities), labels=present)


class ConstantNormal:
    name = "constant-normal"
    tasks = (Task.REPORT, Task.CLASSIFY)

    def predict(self, image: XrayImage, task: str, *, phrase=None, max_new_tokens=None) -> ModelOutput:
        if task == Task.REPORT:
            return _output(self.name, task, image, findings=NORMAL_FINDINGS, impression=NORMAL_IMPRESSION)
        return _label_output(self.name, image, {n: float(n == "No Finding") for n in CLASSIFY_LABELS})


class LabelPrior:
    name = "label-prior"
    tasks = (Task.CLASSIFY,)

    def __init__(self, prevalence: dict[str, float]):
        self.prevalence = prevalence

    def predict(self, image: XrayImage, task: str, *, phrase=None, max_new_tokens=None) -> ModelOutput:
        return _label_output(self.name, image, self.prevalence)


class NearestNeighbour:
    name = "nearest-neighbour"
    tasks = (Task.REPORT, Task.CLASSIFY)

    def __init__(self, embeddings: np.ndarray, records: Sequence, prevalence: dict[str, float]):
        self.embeddings = embeddings  # (n, 1024), unit rows
        self.records = list(records)
        self.prevalence = prevalence
        self.has_report = np.array([bool(report_text(r.report)) for r in self.records])

    def neighbour(self, image: XrayImage, mask: np.ndarray | None = None):
        similarity = self.embeddings @ thumbnail_embedding(image.pixels)
        if mask is not None:
            similarity = np.where(mask, similarity, -np.inf)
        return self.records[int(np.argmax(similarity))]  # argmax takes the first of ties: deterministic

    def predict(self, image: XrayImage, task: str, *, phrase=None, max_new_tokens=None) -> ModelOutput:
        if task == Task.REPORT and self.has_report.any():
            report = self.neighbour(image, self.has_report).report
            return _output(self.name, task, image, findings=report.get("findings"), impression=report.get("impression"))
        if task == Task.REPORT:
            return _output(self.name, task, image)
        neighbour = self.neighbour(image)
        labels = reference_labels(neighbour.labels, neighbour.source_labels)
        probs = {n: float(labels[n]) if labels.get(n) in (0, 1) else self.prevalence[n] for n in CLASSIFY_LABELS}
        return _label_output(self.name, image, probs)


class MeanBox:
    name = "mean-box"
    tasks = (Task.GROUND,)

    def __init__(self, mean_boxes: dict[str, tuple[float, float, float, float]], overall: tuple):
        self.mean_boxes = mean_boxes  # label -> mean (x1, y1, x2, y2) in 0-1
        self.overall = overall

    def predict(self, image: XrayImage, task: str, *, phrase=None, max_new_tokens=None) -> ModelOutput:
        key = _box_key(phrase or "")
        norm = self.mean_boxes.get(key, self.overall)
        return _output(self.name, task, image, boxes=[Box.from_norm(phrase or "", norm, image.size)])


# ---------------------------------------------------------------- building from training records


def thumbnail_embedding(pixels: np.ndarray) -> np.ndarray:
    """32x32 area-averaged thumbnail, mean-centred and L2-normalised (a flat image gives the zero vector)."""
    from PIL import Image

    small = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L").resize((THUMBNAIL, THUMBNAIL), Image.BOX)
    vector = np.asarray(small, dtype=np.float64).ravel()
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def label_prevalence(records: Sequence) -> dict[str, float]:
    """Fraction positive among the records where each label is known (1 or 0); 0 where none is known."""
    out = {}
    truth = [reference_labels(r.labels, r.source_labels) for r in records]
    for name in CLASSIFY_LABELS:
        known = [t[name] for t in truth if t[name] in (0, 1)]
        out[name] = float(np.mean(known)) if known else 0.0
    return out


def mean_boxes(records: Sequence) -> tuple[dict[str, tuple], tuple | None]:
    """Per finding, the mean image-relative box over training records that have a size; and the overall mean."""
    by_label: dict[str, list] = {}
    for record in records:
        if not record.width or not record.height:
            continue
        for box in record.boxes:
            x1, y1, x2, y2 = box["xyxy"]
            norm = (x1 / record.width, y1 / record.height, x2 / record.width, y2 / record.height)
            by_label.setdefault(_box_key(box["label"]), []).append(norm)
    if not by_label:
        return {}, None
    means = {k: tuple(np.mean(v, axis=0)) for k, v in by_label.items()}
    overall = tuple(np.mean([b for v in by_label.values() for b in v], axis=0))
    return means, overall


def build_baselines(train_records: Sequence, load_image, progress: bool = True) -> tuple[list, list[str]]:
    """The baselines the training records allow, and notes on those left out. `load_image(record) -> XrayImage`."""
    notes = []
    baselines: list = [ConstantNormal()]
    labelled = [r for r in train_records
                if any(v in (0, 1) for v in reference_labels(r.labels, r.source_labels).values())]
    prevalence = label_prevalence(labelled)
    if labelled:
        baselines.append(LabelPrior(prevalence))
    else:
        notes.append("label-prior baseline left out: no training record has labels")
    with_images = [r for r in train_records if r.image]
    if with_images:
        embeddings = _embed(with_images, load_image, progress)
        baselines.append(NearestNeighbour(embeddings, with_images, prevalence))
    else:
        notes.append("nearest-neighbour baseline left out: no training record has an image")
    boxes, overall = mean_boxes(train_records)
    if overall is not None:
        baselines.append(MeanBox(boxes, overall))
    else:
        notes.append("mean-box baseline left out: no training record has boxes (with width and height)")
    return baselines, notes


def _embed(records: Sequence, load_image, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    rows = []
    for record in tqdm(records, desc="baseline index", unit="img", file=sys.stderr, disable=not progress):
        rows.append(thumbnail_embedding(load_image(record).pixels))
    return np.stack(rows)


def report_text(report: dict | None) -> str:
    """Findings then impression, the text every report metric compares."""
    if not report:
        return ""
    return " ".join(
        part.strip() for part in (report.get("findings"), report.get("impression")) if part and part.strip()
    )


def _box_key(label: str) -> str:
    """Box labels from different sources ("Effusion", "pleural effusion") meet on their CheXpert name."""
    return normalize_label(label) or label.strip().lower()
