"""How much label information does a Qwen2.5-VL checkpoint's vision tower hold, whatever its language model reads?

    python scripts/tower_label_probe.py weights/cxrlm-tiny runs/m/nih14.jsonl

One logistic probe per NIH label on the mean of the tower's output tokens, fitted on the manifest's training images
(L2, its strength chosen by 5-fold cross-validation there) and scored on its validation images with the model
card's rule (macro AUROC over labels with >= 10 positives), plus `first_component_share` of the probes' scores.
Compare with `cxrlm eval --tasks classify` on the same split: what the language model answers from the same tower.
Needs scikit-learn (in the `test` extra).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from cxrlm.errors import ConfigError, CxrlmError, InputError
from cxrlm.eval.cnn_baselines import classification_scores, nih_targets, split_records
from cxrlm.eval.scoring import MIN_POSITIVES
from cxrlm.pathologies import NIH14
from cxrlm.train.distill import mean_tokens


def probe_logits(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray) -> np.ndarray:
    """(val items, NIH labels) log-odds of one probe per label; 0 where a label has too few training positives."""
    try:
        from sklearn.linear_model import LogisticRegressionCV
    except ImportError:
        raise ConfigError("the probes need scikit-learn: pip install -e '.[test]'") from None

    logits = np.zeros((len(x_val), len(NIH14)))
    for j in range(len(NIH14)):
        known = ~np.isnan(y_train[:, j])
        if y_train[known, j].sum() >= 5:  # 5 folds need a positive each
            probe = LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1], cv=5, scoring="roc_auc", max_iter=2000)
            logits[:, j] = probe.fit(x_train[known], y_train[known, j]).decision_function(x_val)
    return logits


def main(argv=None) -> int:
    from cxrlm.data.manifest import read_manifest

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a Qwen2.5-VL checkpoint folder, e.g. weights/cxrlm-tiny")
    parser.add_argument("manifest", type=Path, help="an nih14 manifest with train and val splits (cxrlm data build)")
    args = parser.parse_args(argv)
    try:
        if not (args.model / "config.json").is_file():
            raise InputError(f"{args.model} is not a checkpoint folder (no config.json)")
        if not args.manifest.is_file():
            raise InputError(f"manifest {args.manifest} not found; build one with `cxrlm data build nih14 ...`")
        records = read_manifest(args.manifest)
        train, val = split_records(records, "train"), split_records(records, "val")
        if not train or not val:
            raise InputError(f"{args.manifest} needs images in both the train and the val split")
        features = mean_tokens(args.model, [r.image_path for r in train + val])
        mean, std = features[: len(train)].mean(0), features[: len(train)].std(0) + 1e-6
        features = (features - mean) / std
        logits = probe_logits(features[: len(train)], nih_targets(train), features[len(train):])
    except CxrlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = classification_scores(nih_targets(val), logits, MIN_POSITIVES)
    if result["macro_auroc"] is None:
        print(f"error: no NIH label has {MIN_POSITIVES} positives in the val split; use a larger one", file=sys.stderr)
        return 2
    print(f"macro AUROC, NIH labels with >= {MIN_POSITIVES} positives: {result['macro_auroc']:.3f}")
    print("  " + ", ".join(f"{name} {result['per_label'][name]['auroc']:.3f}" for name in result["macro_labels"]))
    print(f"first_component_share of the probes' scores: {result['first_component_share']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
