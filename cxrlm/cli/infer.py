"""`cxrlm report | chat | classify | ground IMAGE`: run a model on a study and print structured output.

Human-readable by default; `--json` prints the ModelOutput schema (docs/SCHEMA.md) that scripts rely on.
"""

import argparse
import sys


def _common(parser: argparse.ArgumentParser, several_images: bool = True) -> None:
    if several_images:
        parser.add_argument("images", nargs="+", metavar="IMAGE",
                            help="PNG, JPEG, TIFF or DICOM; several views of one study may be given")
    else:
        parser.add_argument("images", nargs=1, metavar="IMAGE", help="PNG, JPEG, TIFF or DICOM")
    parser.add_argument("--model", help="checkpoint folder (default: $CXRLM_MODEL, else the shipped cxrlm-tiny)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
    parser.add_argument("--json", action="store_true", help="print the JSON output schema instead of text")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per answer")
    parser.add_argument("--view", default=None, help="view position when the file does not say (PA, AP, LL)")


def register(subparsers) -> None:
    report = subparsers.add_parser("report", help="reasoning, CheXpert-14 labels, findings and impression")
    _common(report)
    report.set_defaults(run=run_report)

    chat = subparsers.add_parser("chat", help="interactive, streamed conversation about a study")
    _common(chat)
    chat.set_defaults(run=run_chat)

    classify = subparsers.add_parser("classify", help="a probability for each CheXpert-14 label")
    _common(classify)
    classify.set_defaults(run=run_classify)

    ground = subparsers.add_parser("ground", help="a bounding box for a phrase, e.g. 'right lung'")
    _common(ground, several_images=False)
    ground.add_argument("phrase", help="what to locate")
    ground.set_defaults(run=run_ground)


def _load(args):
    from cxrlm.io import load_study
    from cxrlm.models import load_model

    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        from cxrlm.errors import ConfigError

        raise ConfigError("--max-new-tokens must be at least 1")
    views = [args.view] * len(args.images) if args.view else None
    study = load_study(args.images, view_positions=views)  # read inputs first: a bad file fails fast
    return load_model(args.model, device=args.device, dtype=args.dtype), study


def run_report(args) -> int:
    from cxrlm.chat import Session
    from cxrlm.prompts.templates import task_prompt

    model, study = _load(args)
    session = Session(model, study, args.max_new_tokens)
    out = session.reason()
    report = session.ask(task_prompt(model.dialect, "report"), task="report")
    out.task = "report"
    out.findings, out.impression = report.findings, report.impression
    out.raw_text = out.raw_text + "\n\n" + report.raw_text
    out.timings.generate_s += report.timings.generate_s
    out.timings.new_tokens += report.timings.new_tokens
    _emit(out, args.json)
    return 0


def run_classify(args) -> int:
    model, study = _load(args)
    _emit(model.predict(study, "classify"), args.json)
    return 0


def run_ground(args) -> int:
    model, study = _load(args)
    _emit(model.predict(study, "ground", phrase=args.phrase, max_new_tokens=args.max_new_tokens), args.json)
    return 0


def run_chat(args) -> int:
    from cxrlm import DISCLAIMER
    from cxrlm.chat import Session

    model, study = _load(args)
    session = Session(model, study, args.max_new_tokens)
    interactive = sys.stdin.isatty() and not args.json
    stream = None if args.json else _stream
    if not args.json:
        print(f"[{DISCLAIMER}]\n[model: {model.name}; type a follow-up, or 'exit']\n", file=sys.stderr)
    out = session.reason(on_text=stream)
    _turn(out, args.json)
    while True:
        if interactive:
            print("\nyou> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line or line.strip().lower() in ("exit", "quit"):
            return 0
        if line.strip():
            _turn(session.ask(line, on_text=stream), args.json)


def _stream(text: str) -> None:
    print(text, end="", flush=True)


def _turn(out, as_json: bool) -> None:
    if as_json:
        print(out.to_json(indent=None), flush=True)
    else:
        print()
        for warning in out.warnings:
            print(f"warning: {warning}", file=sys.stderr)


def _emit(out, as_json: bool) -> None:
    if as_json:
        print(out.to_json())
        return
    from cxrlm.cli.render import render_text

    print(render_text(out))
