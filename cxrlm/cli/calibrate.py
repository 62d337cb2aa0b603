"""`cxrlm calibrate --model DIR --manifest VAL.jsonl`: fit per-label calibration of classify probabilities.

The model's raw probabilities come from the eval runner's prediction machinery (same records, same items, same
classify call as `cxrlm eval --tasks classify`); the fit and the file format live in cxrlm.models.calibration.
"""

import argparse

from cxrlm.cli.model_options import add_model_options, load_model_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit per-label temperature (or Platt) scaling of classify probabilities on a labelled split",
        description="Fit per-label calibration of a model's classify probabilities on a manifest split and write it "
        "next to the model (DIR/calibration.json), where classify, eval and the API pick it up. It fits on the raw "
        "probabilities, whatever --calibration says.",
    )
    add_model_options(parser)
    parser.add_argument("--manifest", required=True, help="manifest JSONL (from `cxrlm data build`) with labels")
    parser.add_argument("--split", default="val", help="split to fit on; 'all' for every record (default: val)")
    parser.add_argument("--method", choices=("temperature", "platt"), default="temperature",
                        help="temperature: sigmoid(logit / T); platt: sigmoid(a logit + b) (default: temperature)")
    parser.add_argument("--min-positives", type=int, default=10,
                        help="labels with fewer positives (or negatives) are left uncalibrated (default: 10)")
    parser.add_argument("--out", help="where to write (default: MODEL_DIR/calibration.json)")
    parser.add_argument("--batch-size", type=int, default=8, help="images read (and predicted) together")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrlm.errors import ConfigError, InputError

    if not Path(args.manifest).is_file():
        raise InputError(f"manifest {args.manifest} does not exist; build one with `cxrlm data build`")
    if args.min_positives < 1:
        raise ConfigError(f"--min-positives must be at least 1, got {args.min_positives}")
    if args.out is None and str(args.model or "").startswith(("http://", "https://")):
        raise ConfigError("a served model has no folder to write into: pass --out FILE")
    args.calibration = "none"  # fit on the raw probabilities, whatever the folder holds now
    rows, records = _raw_predictions(args)
    from cxrlm.models import calibration

    truth, prob, names = _matrices(rows)
    fitted = calibration.fit(truth, prob, names, args.method, args.min_positives)
    if not any(entry["fitted"] for entry in fitted.labels.values()):
        raise InputError(
            f"no label has {args.min_positives} positives and {args.min_positives} negatives in split {args.split!r} "
            f"of {args.manifest} ({len(rows)} items): nothing to calibrate; use a larger split or --min-positives"
        )
    fitted.fitted_on = calibration.provenance(Path(args.manifest), _split(args.split), records, rows[0]["system_name"])
    fitted.fitted_on["min_positives"] = args.min_positives
    out = Path(args.out) if args.out else _model_dir(args) / calibration.FILE_NAME
    calibration.save(fitted, out)
    _print_summary(fitted, out)
    return 0


def _split(name: str) -> str | None:
    return None if name == "all" else name


def _raw_predictions(args) -> tuple[list[dict], list]:
    """Classify rows (the eval runner's layout) for every labelled record of the split, from the raw model."""
    import tempfile
    from pathlib import Path

    from cxrlm.errors import InputError
    from cxrlm.eval.runner import (
        MODEL,
        EvalConfig,
        PredictionLog,
        predict_items,
        read_records,
        select_records,
        work_items,
    )
    from cxrlm.types import Task

    records = read_records(Path(args.manifest))
    chosen = select_records(records, _split(args.split), None, 0)
    items = work_items(Task.CLASSIFY, chosen)
    if not items:
        raise InputError(f"no record of split {args.split!r} in {args.manifest} has an image and a known label: "
                         "pass --split, or a manifest with labels")
    model = load_model_from_args(args)  # after the manifest checks: a bad manifest fails before the model loads
    with tempfile.TemporaryDirectory() as work:
        config = EvalConfig(Path(args.manifest), Path(work), tasks=(Task.CLASSIFY,), split=_split(args.split),
                            batch_size=args.batch_size, progress=not args.quiet)
        log = PredictionLog(Path(work) / "predictions.jsonl")
        try:
            predict_items(MODEL, model, items, log, config)
        finally:
            log.close()
        return log.rows, chosen


def _matrices(rows: list[dict]):
    from cxrlm.eval.scoring import classify_matrices
    from cxrlm.pathologies import CLASSIFY_LABELS

    truth, prob = classify_matrices(rows)
    return truth, prob, list(CLASSIFY_LABELS)


def _model_dir(args):
    from pathlib import Path

    from cxrlm.models import default_model_dir

    return Path(args.model) if args.model else default_model_dir()


def _print_summary(fitted, out) -> None:
    from cxrlm import DISCLAIMER

    print(f"[{DISCLAIMER}]")
    print(f"{fitted.method} calibration fitted on {fitted.fitted_where} ({fitted.fitted_on['n_items']} images):")
    for name, entry in fitted.labels.items():
        if entry["fitted"]:
            params = ", ".join(f"{k} {entry[k]:.3f}" for k in ("temperature", "a", "b") if k in entry)
            print(f"  {name:<28} {params}  (n={entry['n']}, positives {entry['n_positive']})")
        elif entry["n"]:
            print(f"  {name:<28} not fitted: {entry['reason']}")
    print(f"wrote {out}; classify, eval and the API use it from now on (--calibration none for raw probabilities)")
