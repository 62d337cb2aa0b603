"""How much label information does a Qwen2.5-VL checkpoint's vision tower hold, whatever its language model reads?

    python scripts/tower_label_probe.py weights/cxrlm-tiny runs/m/nih14.jsonl

One logistic probe per NIH label on the mean of the tower's output tokens, fitted on the manifest's training images
(L2, its strength chosen by 5-fold cross-validation there) and scored on its validation images with the model
card's rule (macro AUROC over labels with >= 10 positives), plus `first_component_share` of the probes' scores.
Compare with `cxrlm eval --tasks classify` on the same split: what the language model answers from the same tower.
Needs scikit-learn (in the `test` extra).
"""

import sys

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegressionCV
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from cxrlm.data.manifest import read_manifest
from cxrlm.eval.cnn_baselines import nih_targets, split_records
from cxrlm.eval.scoring import MIN_POSITIVES
from cxrlm.metrics.labels import auroc, first_component_share
from cxrlm.pathologies import NIH14


def mean_tokens(model_dir: str, records) -> np.ndarray:
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir).image_processor
    features = []
    for record in records:
        batch = processor(images=[Image.open(record.image_path).convert("RGB")], return_tensors="pt")
        with torch.no_grad():
            tokens = model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
        features.append(tokens.mean(0).numpy())
    return np.stack(features)


def main(model_dir: str, manifest: str) -> None:
    records = read_manifest(manifest)
    train, val = split_records(records, "train"), split_records(records, "val")
    features = mean_tokens(model_dir, train + val)
    mean, std = features[: len(train)].mean(0), features[: len(train)].std(0) + 1e-6
    features = (features - mean) / std
    x_train, x_val = features[: len(train)], features[len(train):]
    y_train, y_val = nih_targets(train), nih_targets(val)
    scores = np.full(y_val.shape, 0.5)
    for j in range(len(NIH14)):
        known = ~np.isnan(y_train[:, j])
        if y_train[known, j].sum() >= 5:  # 5 folds need a positive each
            probe = LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1], cv=5, scoring="roc_auc", max_iter=2000)
            scores[:, j] = probe.fit(x_train[known], y_train[known, j]).predict_proba(x_val)[:, 1]
    scored = {NIH14[j]: auroc(y_val[:, j], scores[:, j]) for j in range(len(NIH14))
              if np.nansum(y_val[:, j] == 1) >= MIN_POSITIVES}
    print(f"macro AUROC, NIH labels with >= {MIN_POSITIVES} positives: {np.mean(list(scored.values())):.3f}")
    print("  " + ", ".join(f"{name} {value:.3f}" for name, value in scored.items()))
    print(f"first_component_share of the probes' scores: {first_component_share(scores):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
