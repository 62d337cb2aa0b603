"""`cxrlm eval reasoning` (do a checkpoint's reasoning answers parse?) and `cxrlm eval rewards` (the mean GRPO
reward of a checkpoint on held-out prompts): quick checks of one model, next to `eval compare` (cxrlm/cli/eval.py).
"""

import argparse
from pathlib import Path

from cxrlm.cli.model_options import add_model_options, load_model_from_args


def register(verbs) -> None:
    reasoning = verbs.add_parser(
        "reasoning", help="do a model's reasoning answers parse? parse rate and label F1 on a split",
        description="Do a model's reasoning answers parse? Runs the reason task on a manifest split and counts "
                    "them (cxrlm.eval.reasoning).")
    add_model_options(reasoning)
    reasoning.add_argument("--manifest", required=True, nargs="+", help="manifest JSONL(s) (cxrlm data build)")
    reasoning.add_argument("--split", default="val", help="manifest split to check (default: val)")
    reasoning.add_argument("--out", type=Path, help="also write the result JSON here")
    reasoning.set_defaults(run=run_reasoning)

    rewards = verbs.add_parser(
        "rewards", help="mean reward of a checkpoint on held-out GRPO prompts (did GRPO raise them?)",
        description="Mean reward of a checkpoint on held-out GRPO prompts (cxrlm.train.reward_eval).")
    rewards.add_argument("--model", required=True, help="checkpoint folder")
    rewards.add_argument("--data", required=True, help="GRPO JSONL (prompt, images, ground-truth columns)")
    rewards.add_argument("--rewards", default="format,tag_count", help="comma-separated reward names")
    rewards.add_argument("--samples", type=int, default=4, help="completions sampled per prompt")
    rewards.add_argument("--max-new-tokens", type=int, default=64)
    rewards.add_argument("--seed", type=int, default=0)
    rewards.set_defaults(run=run_rewards)


def run_reasoning(args: argparse.Namespace) -> int:
    import json

    from cxrlm.data.manifest import read_manifest
    from cxrlm.eval.reasoning import check

    records = [r for m in args.manifest for r in read_manifest(m) if r.split == args.split and r.image]
    text = json.dumps(check(load_model_from_args(args), records), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


def run_rewards(args: argparse.Namespace) -> int:
    import json

    from cxrlm.train.reward_eval import mean_rewards

    result = mean_rewards(Path(args.model), args.data, args.rewards.split(","), args.samples, args.max_new_tokens,
                          seed=args.seed)
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))
    return 0
