"""`cxrlm study create|results|teaching-file`: reader studies and teaching cases in the server's database.

`create` checks the manifest and the design before the model loads, precomputes every model output the conditions
show, stores the study and prints each reader's key once. Readers then read in `cxrlm serve`'s viewer (/study).
See docs/STUDY.md; the work is in cxrlm.study.
"""

import argparse
import json
import sys
from pathlib import Path

from cxrlm.cli.gate import add_gate_option
from cxrlm.cli.model_options import add_model_options


def register(subparsers) -> None:
    parser = subparsers.add_parser("study", help="reader studies and teaching: create, results, teaching-file")
    verbs = parser.add_subparsers(dest="study_verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="a counterbalanced reader study (or teaching set) from a case manifest")
    create.add_argument("--cases", required=True, metavar="MANIFEST", help="CSV or JSONL case list (docs/STUDY.md)")
    create.add_argument("--conditions", default="manual,labels,reasoning",
                        help="comma-separated, from manual, labels, reasoning (default: all three)")
    create.add_argument("--readers", type=int, required=True, metavar="N", help="number of readers (keys printed)")
    create.add_argument("--mode", choices=("reader", "teaching"), default="reader",
                        help="reader (conditions) or teaching (read first, then reveal)")
    create.add_argument("--seed", type=int, default=0, help="seed of the case blocks and reading orders (recorded)")
    create.add_argument("--name", default=None, help="study name (default: the manifest's file name)")
    create.add_argument("--batch-size", type=int, default=8, metavar="N", help="cases sent to the model at once")
    create.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="cap on tokens per report (default: the model profile's)")
    _add_store_options(create)
    add_model_options(create)
    add_gate_option(create)
    create.set_defaults(run=run_create)
    results = verbs.add_parser("results", help="accuracy, time and ratings per condition, paired comparisons")
    results.add_argument("study", metavar="STUDY", help="study id (or its first 8 characters)")
    results.add_argument("--out", required=True, type=Path, metavar="DIR",
                         help="writes results.json, responses.csv, report.html")
    results.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    results.add_argument("--resamples", type=int, default=2000, metavar="B", help="bootstrap resamples")
    _add_store_options(results)
    results.set_defaults(run=run_results)
    teaching = verbs.add_parser("teaching-file", help="a reader's revealed teaching cases as HTML pages")
    teaching.add_argument("study", metavar="STUDY", help="study id (or its first 8 characters)")
    teaching.add_argument("--reader", required=True, help="reader pseudonym, e.g. R01")
    teaching.add_argument("--out", required=True, type=Path, metavar="DIR")
    _add_store_options(teaching)
    teaching.set_defaults(run=run_teaching_file)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="the server's database: sqlite:///PATH or postgresql://... "
                                     "(default: sqlite in --data-dir, as `cxrlm serve`)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the server's data folder (default: $CXRLM_SERVE_DIR or ~/.local/share/cxrlm/serve)")


def _store(args):
    from cxrlm.cli.serve import default_data_dir
    from cxrlm.errors import ConfigError

    try:
        from cxrlm.study.store import StudyStore
    except ImportError as err:
        raise ConfigError(f"`cxrlm study` needs the serve extra ({err.name} is missing): "
                          "pip install 'cxrlm[serve]'") from None
    data_dir = args.data_dir or default_data_dir()
    return StudyStore(args.db or f"sqlite:///{data_dir / 'cxrlm.db'}", data_dir)


def run_create(args) -> int:
    from cxrlm import DISCLAIMER
    from cxrlm.cli.model_options import load_model_from_args
    from cxrlm.errors import ConfigError
    from cxrlm.study.create import NEEDS_CLASSIFY, create, plan, precompute

    if args.batch_size < 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise ConfigError("--batch-size and --max-new-tokens must be at least 1")
    if args.name is not None and not 1 <= len(args.name) <= 200:
        raise ConfigError("--name must be 1 to 200 characters")
    study_plan = plan(args.cases, args.conditions, args.readers, args.mode, args.seed, args.gate)  # no model yet
    store = _store(args)
    model_info, outputs = {}, {}
    if NEEDS_CLASSIFY & set(study_plan.conditions):
        model = load_model_from_args(args)
        model_info = {"name": model.name, "profile": model.profile.name, "engine": args.engine,
                      "notice": model.profile.notice}
        outputs = precompute(model, study_plan.cases, study_plan.conditions, args.batch_size, args.max_new_tokens,
                             args.gate, progress=sys.stderr.isatty())
    study_id, keys = create(store, study_plan, outputs, name=args.name or Path(args.cases).name,
                            model_info=model_info)
    print(json.dumps({"study": study_id, "mode": study_plan.mode, "conditions": list(study_plan.conditions),
                      "cases": len(study_plan.cases), "readers": len(keys), "seed": study_plan.seed,
                      "warnings": study_plan.warnings, "notice": DISCLAIMER}, indent=2))
    print("Reader keys (shown once, hand each reader their own; they sign in at /study):")
    for name, key in keys.items():
        print(f"{name}\t{key}")
    return 0


def run_results(args) -> int:
    from cxrlm import DISCLAIMER
    from cxrlm.errors import ConfigError
    from cxrlm.study.results import write_results

    if args.resamples < 100:
        raise ConfigError("--resamples must be at least 100")
    store = _store(args)
    study = store.find_study(args.study)
    rows = store.responses(study.id)
    results = write_results(study, rows, args.out, args.seed, args.resamples, store.cases(study.id))
    short = {c: {k: v for k, v in figures.items() if k != "per_label"} for c, figures in results["conditions"].items()}
    print(json.dumps({"study": study.id, "responses": len(rows), "conditions": short,
                      "model_alone": {k: v for k, v in (results["model_alone"] or {}).items() if k != "per_label"},
                      "method": results["method"], "out": str(args.out), "notice": DISCLAIMER}, indent=2))
    return 0


def run_teaching_file(args) -> int:
    from cxrlm.errors import InputError
    from cxrlm.study.teaching import teaching_file

    store = _store(args)
    study = store.find_study(args.study)
    reader = next((r for r in store.readers(study.id) if r.name == args.reader), None)
    if reader is None:
        raise InputError(f"no reader {args.reader!r} in study {study.id[:8]}: readers are R01, R02, ...")
    pages = teaching_file(store.teaching_entries(reader.id), args.out)
    print(json.dumps({"study": study.id, "reader": reader.name, "pages": len(pages), "out": str(args.out)}))
    return 0
