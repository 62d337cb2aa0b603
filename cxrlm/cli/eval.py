"""`cxrlm eval`: score a model on a manifest (resumable, with baselines and bootstrap intervals), and
`cxrlm eval compare RUN_A RUN_B`: paired bootstrap between two runs over the items they share. The other `eval`
sub-verbs register from their own modules: reasoning and rewards (checks.py), heatmaps (heatmaps.py), cnn-baselines
and tower-probe (tiny.py).

See docs/EVALUATION.md for the metrics, the baselines and the run folder's files.
"""

import argparse
import sys

from cxrlm.cli import checks, heatmaps, tiny
from cxrlm.cli.model_options import add_model_options, load_model_from_args
from cxrlm.types import SCORED_TASKS as TASKS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on a manifest: metrics with 95%% CIs, baselines, Markdown/HTML report",
        description="Evaluate a model on a manifest, or compare two runs: `cxrlm eval compare RUN_A RUN_B`.",
    )
    add_model_options(parser)
    parser.add_argument("--manifest", help="manifest JSONL (from `cxrlm data build`)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--out", help="run folder; rerunning with the same folder resumes")
    parser.add_argument(
        "--split", default="test", help="manifest split to score; 'all' for every record (default: test)"
    )
    parser.add_argument("--limit", type=int, help="score a seeded random subset of N records")
    parser.add_argument("--seed", type=int, default=0, help="seed for --limit, the bootstrap and the model (default 0)")
    parser.add_argument("--max-new-tokens", type=int, help="cap on generated tokens per answer")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="items read (and predicted, if the model batches) together"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--min-positives", type=int, default=10,
                        help="labels with fewer positive items are marked, not ranked or averaged (default 10)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    parser.add_argument(
        "--train-manifest", help="training records for the baselines (default: --manifest's train split)"
    )
    parser.add_argument("--meteor", action="store_true", help="also METEOR (needs Java and the eval extra; slow start)")
    parser.add_argument(
        "--model-metrics",
        action="store_true",
        help="also BERTScore/RadGraph/CheXbert/GREEN via radeval, if installed with weights on disk",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_eval)

    verbs = parser.add_subparsers(dest="eval_verb",
                                  metavar="compare|reasoning|rewards|heatmaps|cnn-baselines|tower-probe")
    compare = verbs.add_parser("compare", help="paired bootstrap of two runs' models over their shared items")
    compare.add_argument("run_a", metavar="RUN_A", help="run folder of `cxrlm eval` (A)")
    compare.add_argument("run_b", metavar="RUN_B", help="run folder of `cxrlm eval` (B)")
    compare.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    compare.set_defaults(run=run_compare)
    checks.register(verbs)
    heatmaps.register_eval(verbs)
    tiny.register_eval(verbs)


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrlm.errors import InputError

    if not args.manifest or not args.out:
        raise InputError("cxrlm eval needs --manifest M.jsonl and --out DIR (or: cxrlm eval compare RUN_A RUN_B)")
    if not Path(args.manifest).is_file():
        raise InputError(f"manifest {args.manifest} does not exist; build one with `cxrlm data build`")
    from cxrlm.eval.runner import EvalConfig
    from cxrlm.eval.runner import run_eval as run

    config = EvalConfig(
        manifest=Path(args.manifest),
        out_dir=Path(args.out),
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        split=None if args.split == "all" else args.split,
        limit=args.limit,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        baselines=not args.no_baselines,
        train_manifest=Path(args.train_manifest) if args.train_manifest else None,
        n_resamples=args.resamples,
        meteor=args.meteor,
        model_metrics=args.model_metrics,
        batch_size=args.batch_size,
        progress=not args.quiet,
        min_positives=args.min_positives,
    )
    model = load_model_from_args(args)
    metrics = run(model, config)
    _print_summary(metrics, config.out_dir)
    return 0


def _print_summary(metrics: dict, out_dir) -> None:
    from cxrlm.eval.render import fmt_ci
    from cxrlm.eval.scoring import PRIMARY, SUMMARY_EXTRA

    for task, values in metrics["tasks"].items():
        names = PRIMARY[task] + SUMMARY_EXTRA.get(task, ())
        shown = ", ".join(f"{name} {fmt_ci(values[name])}" for name in names if name in values)
        print(f"{task}: {shown}")
    for task, why in metrics.get("dropped_tasks", {}).items():
        print(f"{task}: dropped, {why}")
    for note in metrics.get("notes", []):
        if "not ranked" in note or "interval lies above" in note:  # read these before the numbers above
            print(f"note: {note}")
    print(f"wrote {out_dir}/metrics.json, report.md, report.html")


def run_compare(args: argparse.Namespace) -> int:
    import json

    from cxrlm.eval.render import compare_markdown
    from cxrlm.eval.runner import compare_runs

    if args.resamples < 1:
        from cxrlm.errors import ConfigError

        raise ConfigError(f"--resamples must be at least 1, got {args.resamples}")
    result = compare_runs(args.run_a, args.run_b, n_resamples=args.resamples, seed=args.seed)
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.json else compare_markdown(result) + "\n")
    return 0
