"""The CNN pieces of cxrlm-tiny: ResNet-18 baselines for the model card, and what its encoder pretraining shares.

The one CNN training loop (`train_net`: Adam on random resized crops, boxes moved with the crop) trains both the
baselines below (`cxrlm eval cnn-baselines`) and the recipe's lung-box teachers (cxrlm_tiny.recipe.teacher_boxes);
the crops, the device choice and the label scores are the encoder pretraining's too (cxrlm_tiny.encoder).

The baselines: a ResNet-18 trained from scratch on the project's own train split.

Two tasks, each read from a manifest (`cxrlm data build ...`), trained on split "train" and scored on the
requested splits (default "val"), once per seed:

- classify: a 14-output NIH multi-label classifier (`source_labels`, 1 positive, 0 negative, anything else not
  labelled and masked out of the loss). Score: AUROC per NIH label (`cxrlm.metrics.labels.auroc`), and the
  macro over labels with at least `min_positives` positives in the scored split (the model card's rule), plus
  the macro over every label with both classes present, since a small split may leave few labels above the bar.
  Also `first_component_share` (`cxrlm.metrics.labels`): whether its labels follow one number per image.
- ground: a box regressor, one (x1, y1, x2, y2) in image-relative coordinates per box label (for
  covid-chestxray: right lung, left lung), trained with smooth L1 on images that have exactly one box of every
  label. Score: IoU per box (`cxrlm.metrics.boxes.iou`) in pixels of the stored image, mean over boxes.
  Next to it, the mean-training-box baseline (`cxrlm.eval.baselines.mean_boxes`), which needs no training.

Images are loaded once, grayscale, squashed to size x size (boxes live in 0-1 coordinates, so the squash is
undone exactly when scoring). Augmentation is a random resized crop (80-100% of each side, shifted anywhere
inside the image), applied to the boxes too. Weights are random (`resnet18(weights=None)`): nothing is
downloaded. torch and torchvision are imported inside the functions that need them.

Not here: the vision-language model's own evaluation (`cxrlm.eval.runner`), pretrained backbones, tuning, the
command line (cxrlm/cli/tiny.py).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlm.errors import InputError
from cxrlm.eval.baselines import _box_key, mean_boxes
from cxrlm.eval.scoring import MIN_POSITIVES
from cxrlm.metrics.boxes import iou
from cxrlm.metrics.labels import auroc, first_component_share
from cxrlm.pathologies import NIH14

CROP_MIN_SIDE = 0.8  # random resized crop keeps 80-100% of each side: light, the lungs stay in view
BATCH_SIZE = 32
LEARNING_RATE = 1e-3


# ---------------------------------------------------------------- data


def split_records(records: Sequence, split: str) -> list:
    return [r for r in records if r.split == split and r.image_path is not None]


def load_pixels(records: Sequence, size: int) -> np.ndarray:
    """(n, size, size) float32 in 0-1: each image grayscale, resized (not letterboxed) to size x size."""
    from PIL import Image

    out = np.empty((len(records), size, size), dtype=np.float32)
    for i, record in enumerate(records):
        try:
            with Image.open(record.image_path) as image:
                small = image.convert("L").resize((size, size), Image.BILINEAR)
        except OSError as err:
            raise InputError(f"cannot read image {record.image_path} ({err}); check the manifest's root")
        out[i] = np.asarray(small, dtype=np.float32) / 255.0
    return out


def nih_targets(records: Sequence) -> np.ndarray:
    """(n, 14) float: 1, 0, or NaN (not labelled) per NIH label, from `source_labels`."""
    out = np.full((len(records), len(NIH14)), np.nan, dtype=np.float32)
    for i, record in enumerate(records):
        for j, name in enumerate(NIH14):
            value = record.source_labels.get(name)
            if value in (0, 1):
                out[i, j] = float(value)
    return out


def box_labels(records: Sequence) -> list[str]:
    """The box labels the regressor predicts: every label seen in training, in a fixed (sorted) order."""
    return sorted({_box_key(b["label"]) for r in records for b in r.boxes})


def norm_boxes(record, labels: Sequence[str]) -> np.ndarray | None:
    """(len(labels), 4) image-relative boxes, or None unless the record has a size and one box per label.
    Boxes of other labels (an NIH finding next to the mask-derived lungs) do not disqualify the record."""
    if not record.width or not record.height:
        return None
    found: dict[str, list] = {name: [] for name in labels}
    for box in record.boxes:
        if (key := _box_key(box["label"])) in found:
            found[key].append(box["xyxy"])
    if any(len(v) != 1 for v in found.values()):
        return None
    scale = np.array([record.width, record.height, record.width, record.height], dtype=np.float32)
    return np.stack([np.asarray(found[name][0], dtype=np.float32) / scale for name in labels])


def boxed(records: Sequence, labels: Sequence[str]) -> tuple[list, np.ndarray]:
    keep = [(r, b) for r in records if (b := norm_boxes(r, labels)) is not None]
    if not keep:
        return [], np.zeros((0, len(labels), 4), dtype=np.float32)
    return [r for r, _ in keep], np.stack([b for _, b in keep])


# ---------------------------------------------------------------- augmentation and model


def random_crops(n: int, generator) -> np.ndarray:
    """(n, 4) crop windows (x0, y0, w, h) in 0-1: each side 80-100% of the image, placed uniformly inside it."""
    import torch

    u = torch.rand((n, 4), generator=generator).numpy()
    w = CROP_MIN_SIDE + (1 - CROP_MIN_SIDE) * u[:, 0]
    h = CROP_MIN_SIDE + (1 - CROP_MIN_SIDE) * u[:, 1]
    return np.stack([(1 - w) * u[:, 2], (1 - h) * u[:, 3], w, h], axis=1)


def crop_images(images, windows: np.ndarray, size: int):
    """Resample each (1, S, S) image to the window `windows[i]`, output (n, 1, size, size) (bilinear)."""
    import torch
    import torch.nn.functional as F

    win = torch.as_tensor(windows, dtype=torch.float32)
    theta = torch.zeros((len(win), 2, 3))
    # affine_grid maps output [-1, 1] to input [-1, 1]: centre at 2*(x0 + w/2) - 1, half-width w.
    theta[:, 0, 0], theta[:, 1, 1] = win[:, 2], win[:, 3]
    theta[:, 0, 2] = 2 * win[:, 0] + win[:, 2] - 1
    theta[:, 1, 2] = 2 * win[:, 1] + win[:, 3] - 1
    grid = F.affine_grid(theta, [len(win), 1, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_boxes(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Boxes (n, k, 4) in 0-1 expressed in each crop window's 0-1 frame, clipped to it."""
    x0, y0, w, h = (windows[:, i, None] for i in range(4))
    out = np.empty_like(boxes)
    out[..., 0], out[..., 2] = (boxes[..., 0] - x0) / w, (boxes[..., 2] - x0) / w
    out[..., 1], out[..., 3] = (boxes[..., 1] - y0) / h, (boxes[..., 3] - y0) / h
    return out.clip(0.0, 1.0)


def build_resnet18(outputs: int):
    """ResNet-18 with random weights (nothing downloaded) and a 1-channel stem, since the images are gray."""
    import torch
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=outputs)
    net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def set_determinism(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    # The CPU kernels used here are deterministic for a fixed thread count, so seed + threads fix the run.
    torch.set_num_threads(os.cpu_count() or 1)


# ---------------------------------------------------------------- training


def training_device():
    """The GPU when there is one (the baselines are quoted from CPU runs; a GPU run differs in floating-point order)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_net(
    pixels: np.ndarray, targets: np.ndarray, loss_fn, *, outputs: int, epochs: int, size: int, seed: int, boxes: bool
):
    """Adam on random resized crops; `targets` are per-image labels, or boxes moved with the crop when `boxes`."""
    import torch

    set_determinism(seed)
    generator = torch.Generator().manual_seed(seed)
    device = training_device()
    net = build_resnet18(outputs).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    images = torch.from_numpy(pixels[:, None])
    mean, std = float(pixels.mean()), float(pixels.std()) or 1.0
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).numpy()
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            if len(batch) < 2:  # batch norm needs two items
                continue
            windows = random_crops(len(batch), generator)
            x = (crop_images(images[batch], windows, size) - mean) / std
            y = crop_boxes(targets[batch], windows).reshape(len(batch), -1) if boxes else targets[batch]
            loss = loss_fn(net(x.to(device)), torch.from_numpy(np.ascontiguousarray(y)).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net, (mean, std)


def predict(net, pixels: np.ndarray, norm: tuple[float, float]) -> np.ndarray:
    """Raw outputs (n, outputs) on the un-augmented images."""
    import torch

    net.eval()
    mean, std = norm
    device = next(net.parameters()).device
    with torch.no_grad():
        chunks = [
            net(((torch.from_numpy(pixels[i : i + BATCH_SIZE, None]) - mean) / std).to(device)).cpu()
            for i in range(0, len(pixels), BATCH_SIZE)
        ]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)


def masked_bce(logits, targets):
    """Binary cross-entropy over the labelled entries only (NaN = not labelled)."""
    import torch

    known = ~torch.isnan(targets)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])


def box_loss(outputs, targets):
    import torch

    return torch.nn.functional.smooth_l1_loss(torch.sigmoid(outputs), targets, beta=0.05)


# ---------------------------------------------------------------- scoring


def classification_scores(truth: np.ndarray, scores: np.ndarray, min_positives: int) -> dict:
    """Per-label AUROC and positives; macro over labels with >= min_positives positives, and over all defined."""
    per_label = {}
    for j, name in enumerate(NIH14):
        column = truth[:, j]
        per_label[name] = {"auroc": _finite(auroc(column, scores[:, j])), "positives": int(np.nansum(column == 1))}
    eligible = [v["auroc"] for v in per_label.values() if v["positives"] >= min_positives and v["auroc"] is not None]
    defined = [v["auroc"] for v in per_label.values() if v["auroc"] is not None]
    return {
        "macro_auroc": _mean(eligible),
        "macro_labels": [k for k, v in per_label.items() if v["positives"] >= min_positives and v["auroc"] is not None],
        "macro_auroc_all_defined": _mean(defined),
        "per_label": per_label,
        "first_component_share": _finite(first_component_share(1 / (1 + np.exp(-scores)))),  # scores are logits
        "items": len(truth),
    }


def to_pixels(norm: np.ndarray, record) -> list[float]:
    x1, y1, x2, y2 = norm
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return [x1 * record.width, y1 * record.height, x2 * record.width, y2 * record.height]


def grounding_scores(records: Sequence, truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> dict:
    """IoU in pixels of each stored image, per box label and over all boxes. predicted: (n, k, 4) in 0-1."""
    ious = np.array(
        [
            [iou(to_pixels(t, r), to_pixels(p, r)) for t, p in zip(ts, ps)]
            for r, ts, ps in zip(records, truth, predicted)
        ]
    ).reshape(len(records), len(labels))
    return {
        "mean_iou": _mean(ious.ravel().tolist()),
        "per_label": {name: _mean(ious[:, k].tolist()) for k, name in enumerate(labels)},
        "items": len(records),
    }


def mean_box_prediction(train_records: Sequence, labels: Sequence[str], n: int) -> np.ndarray:
    """The mean-training-box baseline: (n, k, 4), every item gets each label's mean image-relative box."""
    means, _ = mean_boxes(train_records)
    return np.broadcast_to(np.array([means[name] for name in labels], dtype=np.float32), (n, len(labels), 4))


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(per_seed: Sequence[dict], key: str) -> dict | None:
    values = [run[key] for run in per_seed if run.get(key) is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


# ---------------------------------------------------------------- the two tasks


def run_classify(
    records: Sequence, *, seeds: Sequence[int], epochs: int, size: int, splits: Sequence[str], min_positives: int = 10
) -> dict:
    train = [r for r in split_records(records, "train") if not np.isnan(nih_targets([r])).all()]
    if len(train) < 2:
        raise InputError(
            "the manifest has fewer than 2 training images with NIH labels; build it with `cxrlm data build nih14 ...`"
        )
    pixels, targets = load_pixels(train, size), nih_targets(train)
    evaluated = {s: split_records(records, s) for s in splits}
    if not all(evaluated.values()):
        raise InputError(f"no images in split(s) {[s for s, rs in evaluated.items() if not rs]}; check --splits")
    eval_pixels = {s: load_pixels(rs, size) for s, rs in evaluated.items()}
    result = {"task": "classify", "train_items": len(train), "labels": list(NIH14), "splits": {}}
    runs = {s: [] for s in splits}
    for seed in seeds:
        net, norm = train_net(
            pixels, targets, masked_bce, outputs=len(NIH14), epochs=epochs, size=size, seed=seed, boxes=False
        )
        for s in splits:
            scores = predict(net, eval_pixels[s], norm)
            runs[s].append({"seed": seed, **classification_scores(nih_targets(evaluated[s]), scores, min_positives)})
    for s in splits:
        result["splits"][s] = {"per_seed": runs[s], **_classify_summary(runs[s])}
    return result


def _classify_summary(runs: Sequence[dict]) -> dict:
    per_label = {name: summarize([r["per_label"][name] for r in runs], "auroc") for name in NIH14}
    return {
        "macro_auroc": summarize(runs, "macro_auroc"),
        "macro_auroc_all_defined": summarize(runs, "macro_auroc_all_defined"),
        "first_component_share": summarize(runs, "first_component_share"),
        "per_label_mean": {k: (v["mean"] if v else None) for k, v in per_label.items()},
    }


def run_ground(records: Sequence, *, seeds: Sequence[int], epochs: int, size: int, splits: Sequence[str]) -> dict:
    labels = box_labels(split_records(records, "train"))
    train, train_boxes = boxed(split_records(records, "train"), labels)
    if len(train) < 2:
        raise InputError(
            "the manifest has fewer than 2 training images with one box per label and a size; "
            "build it with `cxrlm data build covid-chestxray ...`"
        )
    pixels = load_pixels(train, size)
    evaluated = {s: boxed(split_records(records, s), labels) for s in splits}
    eval_pixels = {s: load_pixels(rs, size) for s, (rs, _) in evaluated.items()}
    result = {"task": "ground", "train_items": len(train), "labels": labels, "splits": {}}
    for s, (rs, truth) in evaluated.items():
        baseline = grounding_scores(rs, truth, mean_box_prediction(train, labels, len(rs)), labels) if rs else None
        result["splits"][s] = {"mean_box": baseline, "per_seed": []}
    for seed in seeds:
        net, norm = train_net(
            pixels, train_boxes, box_loss, outputs=4 * len(labels), epochs=epochs, size=size, seed=seed, boxes=True
        )
        for s, (rs, truth) in evaluated.items():
            if not rs:
                continue
            predicted = 1 / (1 + np.exp(-predict(net, eval_pixels[s], norm))).reshape(len(rs), len(labels), 4)
            result["splits"][s]["per_seed"].append({"seed": seed, **grounding_scores(rs, truth, predicted, labels)})
    for s in splits:
        result["splits"][s]["resnet18"] = summarize(result["splits"][s]["per_seed"], "mean_iou")
    return result


# ---------------------------------------------------------------- command line (cxrlm eval cnn-baselines)


def run(task: str, manifest: Path, out: Path, *, seeds: Sequence[int], epochs: int, size: int,
        splits: Sequence[str], min_positives: int = MIN_POSITIVES) -> dict:
    """Train and score one task's baselines on a manifest, write the results JSON to `out`, return its headline."""
    from cxrlm.data.manifest import read_manifest

    if not seeds or epochs < 1 or size < 32:
        raise InputError("need at least one seed, --epochs >= 1 and --size >= 32")
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} not found; build one with `cxrlm data build`")
    records = read_manifest(manifest)
    started = time.perf_counter()
    common = {"seeds": list(seeds), "epochs": epochs, "size": size, "splits": list(splits)}
    if task == "classify":
        result = run_classify(records, min_positives=min_positives, **common)
    else:
        result = run_ground(records, **common)
    result["settings"] = {
        **common,
        "manifest": str(manifest),
        "batch_size": BATCH_SIZE,
        "lr": LEARNING_RATE,
        "threads": os.cpu_count(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return _headline(result)


def _headline(result: dict) -> dict:
    """One line for the terminal: the mean over seeds of each split's main numbers."""
    out = {"task": result["task"], "seconds": result["settings"]["seconds"]}
    for split, body in result["splits"].items():
        if result["task"] == "classify":
            out[split] = {k: (body[k] or {}).get("mean") for k in ("macro_auroc", "macro_auroc_all_defined")}
        else:
            out[split] = {
                "mean_box": (body["mean_box"] or {}).get("mean_iou"),
                "resnet18": (body["resnet18"] or {}).get("mean"),
            }
    return out

