"""Soft yes/no answers for SFT: linear probes on the frozen vision tower answer the label questions (distillation).

Why: with 0/1 answers the tiny language model learned each label's base rate and little of the image (its loss on
the yes/no rows sat at the label priors' entropy), while a logistic probe on the same tower's mean token ranks the
validation images above chance. So each training image's yes/no rows are answered with a probe's probability
instead, and the loss on the first answer token is the cross-entropy against that two-token distribution
(P("Yes") = p, P("No") = 1 - p): every row then says how likely the finding is on this image, not only which
prior wins. The probabilities are cross-fitted (each image's comes from probes fitted without it), so the targets
hold what generalises from the tower's tokens, not what a probe memorised of its own training images. Measured on
the tiny recipe (the model card): in its seventh stage's 600 steps, where each label's rows pass less than once,
the validation AUROC did not move; in the last stage (`tiny_recipe.label_distillation`), which asks every image
about every label for 5,000 steps, the language model follows the probes and the labels are read apart.

A row opts in with a `yes_prob` column (null elsewhere); `cxrlm.train.sft` then uses `SoftAnswerCollator` and
`soft_answer_trainer`. Not here: which rows are asked (cxrlm.train.tiny_recipe.write_sft).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from cxrlm.errors import ConfigError, InputError

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


class SoftAnswerCollator:
    """Wraps an SFT collator for rows with a `yes_prob`: the first answer token ("Yes"/"No") leaves the 0/1 loss
    (its label becomes -100) and its position and probability go into the batch for `soft_answer_trainer`."""

    def __init__(self, inner, yes_id: int, no_id: int):
        self.inner, self.yes_id, self.no_id = inner, yes_id, no_id

    def __call__(self, examples: list[dict]):
        import torch

        soft = [ex.pop("yes_prob", None) for ex in examples]
        batch = self.inner(examples)
        labels = batch["labels"]
        positions = torch.full((len(examples),), -1)
        for i, p in enumerate(soft):
            if p is None or (isinstance(p, float) and math.isnan(p)):
                continue
            answer = int((labels[i] != -100).nonzero()[0])
            if int(labels[i, answer]) not in (self.yes_id, self.no_id):
                raise InputError("a row with a yes_prob must be a single yes/no question answered 'Yes.' or 'No.'")
            labels[i, answer], positions[i] = -100, answer
        batch["answer_positions"] = positions
        batch["yes_prob"] = torch.tensor([p if p is not None else math.nan for p in soft], dtype=torch.float32)
        return batch


def soft_answer_loss(logits, labels, positions, yes_prob, yes_id: int, no_id: int):
    """Mean over supervised tokens of: the usual next-token cross-entropy, and at each soft row's answer token
    -(p log P(Yes) + (1 - p) log P(No)) over the whole vocabulary."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    targets = labels[:, 1:]
    mask = targets != -100
    hard = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)[mask].sum()
    rows = (positions >= 0).nonzero().squeeze(-1)
    at = logp[rows, positions[rows] - 1]  # logp[:, t - 1] predicts labels[:, t]
    p = yes_prob[rows].to(at.dtype)
    soft = -(p * at[:, yes_id] + (1 - p) * at[:, no_id]).sum()
    return (hard + soft) / (mask.sum() + len(rows)).clamp_min(1)


def soft_answer_trainer(base, yes_id: int, no_id: int):
    """`base` (TRL's SFTTrainer) with `soft_answer_loss` as its loss."""

    class SoftAnswerTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            positions, yes_prob = inputs.pop("answer_positions"), inputs.pop("yes_prob")
            labels = inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            loss = soft_answer_loss(outputs.logits, labels, positions, yes_prob, yes_id, no_id)
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                loss = loss / self.current_gradient_accumulation_steps  # Trainer then leaves accumulation to the loss
            return (loss, outputs) if return_outputs else loss

    return SoftAnswerTrainer


def answer_ids(tokenizer) -> tuple[int, int]:
    """The first tokens of the answers "Yes." and "No."."""
    return tokenizer.encode("Yes.", add_special_tokens=False)[0], tokenizer.encode("No.", add_special_tokens=False)[0]
