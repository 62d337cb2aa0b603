"""`cxrlm train sft|grpo --recipe FILE [key=value ...]`: fine-tune a CXR vision-language model on TRL.
(`cxrlm train tiny`, the demo model's own recipe, is registered from cxrlm/cli/tiny.py.)

Needs the `train` extra (pip install 'cxrlm[train]'). For several GPUs or nodes, run the same command under
`accelerate launch --config_file recipes/launch/<ddp|zero2|zero3|fsdp>.yaml -m cxrlm train ...` (docs/TRAINING.md).
"""

import argparse

from cxrlm.cli import tiny



def _sft():
    from cxrlm.train import sft

    return sft.SFTRecipe, sft.main


def _grpo():
    from cxrlm.train import grpo

    return grpo.GRPORecipe, grpo.main


# method -> (what imports its recipe class and trainer: TRL loads only when one runs, help)
METHODS = {
    "sft": (_sft, "supervised fine-tuning on conversations (LoRA, QLoRA or full)"),
    "grpo": (_grpo, "GRPO with verifiable rewards (format, labels, boxes, report CE-F1)"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a model: SFT, then GRPO with verifiable rewards")
    sub = parser.add_subparsers(dest="method", metavar="METHOD", required=True)
    for method, (_, help_text) in METHODS.items():
        one = sub.add_parser(method, help=help_text, description=help_text)
        one.add_argument("--recipe", help="YAML recipe (see recipes/); fields can be overridden by key=value")
        one.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields, e.g. max_steps=10")
        one.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
        one.set_defaults(run=run_train, method=method)
    tiny.register_train(sub)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from cxrlm.errors import ConfigError

    try:
        from cxrlm.train import config

        recipe_class, train = METHODS[args.method][0]()
        recipe = config.load_recipe(args.recipe, recipe_class, args.overrides)
        if args.print_recipe:
            print(json.dumps(dataclasses.asdict(recipe), indent=2))
            return 0
        out = train(recipe)
    except ModuleNotFoundError as err:
        if err.name in ("trl", "peft", "datasets", "yaml"):
            raise ConfigError(f"training needs {err.name}: pip install 'cxrlm[train]'") from None
        raise
    print(f"saved {args.method} checkpoint to {out}")
    return 0
