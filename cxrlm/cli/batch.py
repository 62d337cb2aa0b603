"""`cxrlm report|classify|ground DIR --out results.jsonl`: a folder tree in, one line per study out (cxrlm.batch).

Resumable: a rerun with the same --out skips every study already there. With --format csv the JSONL log is kept
beside the CSV (results.csv.jsonl) and the CSV is rewritten from it at the end of each run.
"""

import argparse
import json
import sys
from pathlib import Path


def add_batch_options(parser: argparse.ArgumentParser, out: bool = True) -> None:
    group = parser.add_argument_group("batch runs (a single IMAGE that is a folder)")
    if out:
        group.add_argument("--out", metavar="FILE", help="results of a folder run: one JSON line per study")
    group.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="results format (default jsonl)")
    group.add_argument("--max-files", type=int, default=None, metavar="N",
                       help="refuse a folder of more image files than this (default 100,000)")
    group.add_argument("--batch-size", type=int, default=8, metavar="N", help="studies sent to the engine at once")
    group.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N new studies")


def is_folder_run(args) -> bool:
    return len(args.images) == 1 and Path(args.images[0]).is_dir()


def run_folder(args, task: str) -> int:
    from cxrlm import DISCLAIMER
    from cxrlm.batch import MAX_FILES, find_studies, run_batch, summary, write_csv
    from cxrlm.errors import ConfigError
    from cxrlm.eval.runner import PredictionLog

    if not args.out:
        raise ConfigError("a folder run writes its results to a file: add --out results.jsonl")
    for name in ("max_files", "batch_size", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if any(getattr(args, name, None) for name in ("prior", "prior_report", "export", "heatmap", "labels")):
        raise ConfigError("--prior, --prior-report, --export, --heatmap and --labels are for one study: "
                          "run them without a folder")
    studies = find_studies(Path(args.images[0]), args.max_files or MAX_FILES)  # before the model loads
    out = Path(args.out)
    log_path = out.with_name(out.name + ".jsonl") if args.format == "csv" else out
    log = PredictionLog(log_path)
    from cxrlm.cli.model_options import load_model_from_args

    model = load_model_from_args(args)
    try:
        done_now = run_batch(model, studies, task, log, phrase=getattr(args, "phrase", None), gate=args.gate,
                             chunk_size=args.batch_size, limit=args.limit, max_new_tokens=args.max_new_tokens,
                             progress=sys.stderr.isatty())
    finally:
        log.close()
    keys = {s.key for s in studies}
    rows = [row for row in log.rows if row["key"] in keys]
    if args.format == "csv":
        write_csv(rows, out, task)
    result = summary(rows, task) | {"done_now": done_now, "out": str(out), "notice": DISCLAIMER}
    print(json.dumps(result, indent=None if args.json else 2))
    return 0
