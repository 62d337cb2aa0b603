"""`cxrlm train sft|grpo --recipe FILE [key=value ...]`: fine-tune a CXR vision-language model on TRL.
(`cxrlm train tiny`, the demo model's own recipe, is registered from cxrlm/cli/tiny.py.)

Needs the `train` extra (pip install 'cxrlm[train]'). For several GPUs or nodes, run the same command under
`accelerate launch --config_file recipes/launch/<ddp|zero2|zero3|fsdp>.yaml -m cxrlm train ...` (docs/TRAINING.md).
"""

import argparse

from cxrlm.cli import tiny

METHODS = {
    "sft": ("SFTRecipe", "cxrlm.train.sft", "supervised fine-tuning on conversations (LoRA, QLoRA or full)"),
    "grpo": ("GRPORecipe", "cxrlm.train.grpo", "GRPO with verifiable rewards (format, labels, boxes, report CE-F1)"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a model: SFT, then GRPO with verifiable rewards")
    sub = parser.add_subparsers(dest="method", metavar="METHOD", required=True)
    for method, (_, _, help_text) in METHODS.items():
        one = sub.add_parser(method, help=help_text, description=help_text)
        one.add_argument("--recipe", help="YAML recipe (see recipes/); fields can be overridden by key=value")
        one.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields, e.g. max_steps=10")
        one.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
        one.set_defaults(run=run_train, method=method)
    tiny.register_train(sub)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses
    import importlib
    import json

    from cxrlm.errors import ConfigError

    class_name, module_name, _ = METHODS[args.method]
    try:
        from cxrlm.train import config

        recipe = config.load_recipe(args.recipe, getattr(config, class_name), args.overrides)
        if args.print_recipe:
            print(json.dumps(dataclasses.asdict(recipe), indent=2))
            return 0
        out = importlib.import_module(module_name).main(recipe)
    except ModuleNotFoundError as err:
        if err.name in ("trl", "peft", "datasets", "yaml"):
            raise ConfigError(f"training needs {err.name}: pip install 'cxrlm[train]'") from None
        raise
    print(f"saved {args.method} checkpoint to {out}")
    return 0
