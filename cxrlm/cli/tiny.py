"""The demo model cxrlm-tiny's verbs: `cxrlm train tiny` (its recipe, end to end), `cxrlm eval cnn-baselines`
(the ResNet-18 baselines its model card quotes) and `cxrlm eval tower-probe` (how much label information a
checkpoint's vision tower holds). The code is the `cxrlm_tiny` package, imported inside the functions that run
them: the library never imports it (docs/ARCHITECTURE.md).
"""

import argparse
from pathlib import Path

# The recipe is its defaults, so --help shows every one. (flag, type, default, help)
RECIPE_OPTIONS = (
    ("--data", Path, Path("../shared/data"), "the shared datasets' folder"),
    ("--work", Path, Path("runs/tiny-train"), "intermediate files; rerun to resume"),
    ("--out", Path, Path("weights/cxrlm-tiny"), "the finished model folder"),
    ("--copies", int, 2, "augmented copies of each training image"),
    ("--box-copies", int, 8, "augmented copies of each image with lung boxes"),
    ("--questions", int, 10, "yes/no label questions per image"),
    ("--teachers", int, 3, "ResNet-18 box teachers (0: no teacher boxes)"),
    ("--encoder-epochs", int, 120, "vision-tower pretraining epochs"),
    ("--label-anchor", int, 30, "from this encoder epoch on, the label head learns a frozen copy of itself as it was "
                                "then instead of the labels, so longer pretraining keeps them (0: none)"),
    ("--sft-epochs", float, 1.0, "multi-turn SFT epochs"),
    ("--sft-lr", float, 1e-3, "multi-turn SFT learning rate"),
    ("--grpo-steps", int, 12, "GRPO steps (0: none)"),
    ("--grpo-lr", float, 1e-5, "GRPO learning rate"),
    ("--single-turn-steps", int, 600, "single-turn SFT, batches of 16 (0: none)"),
    ("--single-turn-lr", float, 3e-4, "single-turn SFT learning rate"),
    ("--distil-steps", int, 0, "an optional last stage, batches of 16: soft yes/no answers from the tower's probes "
                               "(0: none; run 12, the model shipped before run 14, used 5000)"),
    ("--seed", int, 0, "every stage's seed"),
)


def register_train(methods) -> None:
    """`cxrlm train tiny`, next to `train sft` and `train grpo` (cxrlm/cli/train.py)."""
    description = "The cxrlm-tiny recipe, end to end: data, tokenizer, encoder pretraining, SFT, GRPO, single-turn SFT."
    parser = methods.add_parser("tiny", help="retrain the demo model cxrlm-tiny from the public data",
                                description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for flag, kind, default, help_text in RECIPE_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=help_text)
    parser.set_defaults(run=run_recipe)


def run_recipe(args: argparse.Namespace) -> int:
    import json

    from cxrlm.errors import ConfigError

    if args.teachers < 0:
        raise ConfigError("--teachers must be 0 (no teacher boxes) or more")
    if not 0 <= args.label_anchor < args.encoder_epochs:
        raise ConfigError(f"--label-anchor {args.label_anchor} must be 0 (none) or an epoch before --encoder-epochs "
                          f"{args.encoder_epochs}")
    from cxrlm_tiny.recipe import run

    names = [flag[2:].replace("-", "_") for flag, *_ in RECIPE_OPTIONS]
    options = argparse.Namespace(**{name: getattr(args, name) for name in names})  # what its training log keeps
    log = run(args.data, args.work, args.out, options)
    print(json.dumps(log["stages_s"], indent=2))
    return 0


def register_eval(verbs) -> None:
    """`cxrlm eval cnn-baselines` and `cxrlm eval tower-probe`, next to `eval compare` (cxrlm/cli/eval.py)."""
    cnn = verbs.add_parser("cnn-baselines", help="ResNet-18 baselines trained from scratch on a manifest (model card)",
                           description="CNN baselines for the model card: a ResNet-18 trained from scratch on the "
                                       "manifest's train split, scored on --splits, once per seed.")
    cnn.add_argument("task", choices=("classify", "ground"))
    cnn.add_argument("--manifest", required=True, type=Path)
    cnn.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    cnn.add_argument("--epochs", type=int, default=10)
    cnn.add_argument("--size", type=int, default=224, help="square input side in pixels")
    cnn.add_argument("--splits", default="val", help="comma-separated splits to score (default val)")
    cnn.add_argument("--min-positives", type=int, help="classify: a label needs this many positives (default: "
                                                       "the model card's rule, cxrlm.eval.scoring.MIN_POSITIVES)")
    cnn.add_argument("--out", required=True, type=Path, help="results JSON")
    cnn.set_defaults(run=run_cnn_baselines)

    probe = verbs.add_parser("tower-probe", help="how much label information a checkpoint's vision tower holds",
                             description="One logistic probe per NIH label on the mean of a Qwen2.5-VL checkpoint's "
                                         "vision-tower tokens, fitted on the manifest's train split and scored on its "
                                         "val split (macro AUROC over labels with >= 10 positives).")
    probe.add_argument("model", type=Path, help="a Qwen2.5-VL checkpoint folder, e.g. weights/cxrlm-tiny")
    probe.add_argument("manifest", type=Path, help="an nih14 manifest with train and val splits (cxrlm data build)")
    probe.set_defaults(run=run_tower_probe)


def run_cnn_baselines(args: argparse.Namespace) -> int:
    import json

    from cxrlm.errors import InputError
    from cxrlm.eval.scoring import MIN_POSITIVES
    from cxrlm_tiny import cnn

    try:
        seeds = [int(part) for part in args.seeds.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    min_positives = MIN_POSITIVES if args.min_positives is None else args.min_positives
    headline = cnn.run(args.task, args.manifest, args.out, seeds=seeds, epochs=args.epochs, size=args.size,
                       splits=splits, min_positives=min_positives)
    print(json.dumps(headline))
    return 0


def run_tower_probe(args: argparse.Namespace) -> int:
    from cxrlm.eval.scoring import MIN_POSITIVES
    from cxrlm_tiny.probes import tower_probe

    result = tower_probe(args.model, args.manifest)
    print(f"macro AUROC, NIH labels with >= {MIN_POSITIVES} positives: {result['macro_auroc']:.3f}")
    print("  " + ", ".join(f"{name} {result['per_label'][name]['auroc']:.3f}" for name in result["macro_labels"]))
    share = result["first_component_share"]  # None when too few labels vary to say
    print(f"first_component_share of the probes' scores: {'n/a' if share is None else f'{share:.3f}'}")
    return 0
