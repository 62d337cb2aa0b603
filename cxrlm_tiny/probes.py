"""Linear probes on cxrlm-tiny's frozen vision tower: soft yes/no answers for SFT, and how much the tower holds.

Soft answers (distillation): linear probes on the frozen vision tower answer the label questions.

Why: with 0/1 answers the tiny language model learned each label's base rate and little of the image (its loss on
the yes/no rows sat at the label priors' entropy), while a logistic probe on the same tower's mean token ranks the
validation images above chance. So each training image's yes/no rows are answered with a probe's probability
instead, and the loss on the first answer token is the cross-entropy against that two-token distribution
(P("Yes") = p, P("No") = 1 - p): every row then says how likely the finding is on this image, not only which
prior wins. The probabilities are cross-fitted (each image's comes from probes fitted without it), so the targets
hold what generalises from the tower's tokens, not what a probe memorised of its own training images. Measured on
the tiny recipe (the model card): in its seventh stage's 600 steps, where each label's rows pass less than once,
the validation AUROC did not move; in the last stage (`cxrlm_tiny.recipe.label_distillation`), which asks every
image about every label for 5,000 steps, the language model follows the probes and the labels are read apart. The
rows carry them in a `yes_prob` column, which `cxrlm train sft` learns as soft answers (cxrlm.train.soft_answers).

The tower probe (`cxrlm eval tower-probe MODEL MANIFEST`, `tower_probe`): one logistic probe per NIH label on the
mean of the tower's output tokens, fitted on the manifest's training images (L2, its strength chosen by 5-fold
cross-validation there) and scored on its validation images with the model card's rule (macro AUROC over labels
with >= 10 positives), plus `first_component_share` of the probes' scores. Compare with `cxrlm eval --tasks
classify` on the same split: what the language model answers from the same tower.

Not here: which rows are asked (cxrlm_tiny.recipe.write_sft). Needs scikit-learn (the `train` extra).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from cxrlm.errors import ConfigError, InputError
from cxrlm.eval.scoring import MIN_POSITIVES
from cxrlm.pathologies import NIH14
from cxrlm_tiny.cnn import classification_scores, nih_targets, split_records

PROBE_C = (0.001, 0.01, 0.1, 1.0)  # L2 strengths a probe picks from by cross-validated AUROC
FOLDS = 5


def mean_tokens(model_dir: Path, image_paths: list) -> np.ndarray:
    """(images, dim) mean of the vision tower's output tokens per image, as the language model receives them."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir).image_processor
    features = []
    for path in image_paths:
        try:
            image = Image.open(path).convert("RGB")
        except OSError as err:
            raise InputError(f"cannot read image {path} ({err}); check the manifest's root") from None
        batch = processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            tokens = model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
        features.append(tokens.mean(0).numpy())
    return np.stack(features)


def cross_fitted(features: np.ndarray, target: np.ndarray, seed: int) -> np.ndarray:
    """P(positive) for every item with a known 0/1 `target` (nan elsewhere), each from a logistic probe fitted on
    the other folds; all nan when a fold could not see two positives (too rare to distil). The L2 strength is
    chosen once, by cross-validated AUROC over all the items, so every fold's probabilities share one scale."""
    try:
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
    except ImportError:
        raise ConfigError("the label probes need scikit-learn: pip install -e '.[train]'") from None

    out = np.full(len(target), np.nan)
    known = np.flatnonzero(~np.isnan(target))
    if target[known].sum() < 2 * FOLDS:
        return out
    x = (features[known] - features[known].mean(0)) / (features[known].std(0) + 1e-6)
    y = target[known].astype(int)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn's notices of coming default changes, none of which apply here
        warnings.simplefilter("ignore", FutureWarning)
        strength = LogisticRegressionCV(Cs=list(PROBE_C), cv=folds, scoring="roc_auc", max_iter=2000).fit(x, y).C_[0]
        probe = LogisticRegression(C=strength, max_iter=2000)
        out[known] = cross_val_predict(probe, x, y, cv=folds, method="predict_proba")[:, 1]
    return out


def soft_answers(model_dir: Path, images: list[str], targets: dict[str, np.ndarray],
                 seed: int) -> dict[str, dict[str, float]]:
    """image -> {label: cross-fitted P(yes)} for the labels common enough to distil; `targets` holds each label's
    0/1/nan truth over `images` (nan = unknown)."""
    features = mean_tokens(model_dir, images)
    answers: dict[str, dict[str, float]] = {image: {} for image in images}
    for name, target in targets.items():
        for image, p in zip(images, cross_fitted(features, target, seed)):
            if not math.isnan(p):
                answers[image][name] = float(p)
    return answers


def probe_logits(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray) -> np.ndarray:
    """(val items, NIH labels) log-odds of one probe per label; 0 where a label has too few training positives."""
    try:
        from sklearn.linear_model import LogisticRegressionCV
    except ImportError:
        raise ConfigError("the probes need scikit-learn: pip install -e '.[train]'") from None

    logits = np.zeros((len(x_val), len(NIH14)))
    for j in range(len(NIH14)):
        known = ~np.isnan(y_train[:, j])
        if y_train[known, j].sum() >= FOLDS:  # the folds need a positive each
            probe = LogisticRegressionCV(Cs=list(PROBE_C), cv=FOLDS, scoring="roc_auc", max_iter=2000)
            with warnings.catch_warnings():  # scikit-learn's notices of coming default changes, as in cross_fitted
                warnings.simplefilter("ignore", FutureWarning)
                logits[:, j] = probe.fit(x_train[known], y_train[known, j]).decision_function(x_val)
    return logits


def tower_probe(model_dir: Path, manifest: Path) -> dict:
    """How much label information the checkpoint's vision tower holds, whatever its language model reads:
    `classification_scores` of the NIH probes on the manifest's val split (fitted on its train split)."""
    from cxrlm.data.manifest import read_manifest

    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir} is not a checkpoint folder (no config.json)")
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} not found; build one with `cxrlm data build nih14 ...`")
    records = read_manifest(manifest)
    train, val = split_records(records, "train"), split_records(records, "val")
    if not train or not val:
        raise InputError(f"{manifest} needs images in both the train and the val split")
    features = mean_tokens(model_dir, [r.image_path for r in train + val])
    mean, std = features[: len(train)].mean(0), features[: len(train)].std(0) + 1e-6
    features = (features - mean) / std
    logits = probe_logits(features[: len(train)], nih_targets(train), features[len(train):])
    result = classification_scores(nih_targets(val), logits, MIN_POSITIVES)
    if result["macro_auroc"] is None:
        raise InputError(f"no NIH label has {MIN_POSITIVES} positives in the val split of {manifest}; use a larger one")
    return result
