"""`cxrlm report | chat | classify | ground IMAGE`: run a model on a study and print structured output.

Human-readable by default; `--json` prints the ModelOutput schema (docs/SCHEMA.md) that scripts rely on.
"""

import argparse
import sys

from cxrlm.cli.batch import add_batch_options, is_folder_run, run_folder
from cxrlm.cli.gate import add_gate_option
from cxrlm.cli.heatmaps import add_heatmap_option, check_heatmap_label, write_heatmap
from cxrlm.cli.model_options import add_model_options, load_model_from_args
from cxrlm.cli.pacs_source import add_pacs_source, check_prior_option, is_pacs_run, load_pacs_study, store_result
from cxrlm.types import Task


def _common(parser: argparse.ArgumentParser, several_images: bool = True) -> None:
    if several_images:
        parser.add_argument("images", nargs="*", metavar="IMAGE",
                            help="PNG, JPEG, TIFF or DICOM; several views of one study may be given; or one "
                                 "folder of studies (a batch run, needs --out); or none with --study")
    else:
        parser.add_argument("images", nargs="*", metavar="IMAGE",
                            help="PNG, JPEG, TIFF or DICOM, or a folder of studies (a batch run, needs --out); or "
                                 "none with --study")
    add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print the JSON output schema instead of text")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per answer")
    parser.add_argument("--view", default=None, metavar="VIEWS",
                        help="view position of each image where its file does not say, in order, e.g. PA,LL "
                             "(one value applies to every image); PA, AP, LL, RL, LATERAL or FRONTAL")
    add_gate_option(parser)
    add_pacs_source(parser)


def register(subparsers) -> None:
    report = subparsers.add_parser("report", help="reasoning, CheXpert-14 labels, findings and impression")
    _common(report)
    report.add_argument("--prior", nargs="+", default=[], metavar="IMAGE",
                        help="images of a prior study; 'auto' with --study: the patient's latest earlier chest "
                             "radiograph study on the PACS, with its report from a stored SR")
    report.add_argument("--prior-report", metavar="FILE", help="text file with the prior study's report")
    report.add_argument("--export", choices=("json", "md", "fhir", "sr"),
                        help="write a structured report: json, md, fhir (R4 JSON) or sr (DICOM SR, needs --out)")
    report.add_argument("--out", metavar="FILE", help="where --export writes (default: standard output); a folder run's results")
    report.add_argument("--show-prompt", action="store_true", help="print every prompt sent to the model to stderr")
    report.add_argument("--store-sr", action="store_true",
                        help="with --study: file the result as a preliminary DICOM SR into the study (STOW-RS)")
    add_batch_options(report, out=False)
    report.set_defaults(run=run_report)

    chat = subparsers.add_parser("chat", help="interactive, streamed conversation about a study")
    _common(chat)
    chat.set_defaults(run=run_chat)

    classify = subparsers.add_parser("classify", help="a probability for each CheXpert-14 and NIH-14 label")
    _common(classify)
    classify.add_argument("--labels", metavar="NAMES",
                          help="comma-separated CheXpert or NIH names to score, e.g. 'Effusion,Pleural Effusion' "
                               "(default: all CheXpert-14 and NIH-14 labels)")
    add_heatmap_option(classify, label_option=True)
    add_batch_options(classify)
    classify.set_defaults(run=run_classify)

    ground = subparsers.add_parser("ground", help="a bounding box for a phrase, e.g. 'right lung'")
    _common(ground, several_images=False)
    ground.add_argument("phrase", help="what to locate")
    add_heatmap_option(ground, label_option=False)
    add_batch_options(ground)
    ground.set_defaults(run=run_ground)


def _load(args):
    from cxrlm.errors import InputError
    from cxrlm.gate import check_study, check_views
    from cxrlm.io import load_study

    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        from cxrlm.errors import ConfigError

        raise ConfigError("--max-new-tokens must be at least 1")
    check_prior_option(args)
    if len(args.images) > 1 and args.verb == "ground":
        raise InputError(f"ground takes one IMAGE, not {len(args.images)}: give the view to locate the phrase on")
    if is_pacs_run(args):
        study = _pacs_study(args)
    else:
        if not args.images:
            raise InputError("no image given: pass IMAGE file(s), or --study UID to read a study from a PACS")
        _check_image_count(len(args.images), len(getattr(args, "prior", None) or ()))
        views = _views(args.view, len(args.images)) if args.view else None
        study = load_study(args.images, view_positions=views)  # read inputs first: a bad file fails fast
        if getattr(args, "prior", None) or getattr(args, "prior_report", None):
            _attach_prior(study, args)
    check_study(study, args.gate)  # a photograph or a CT slice is refused before the model loads
    model = load_model_from_args(args)
    check_views(study, model.profile.views, model.name, args.gate)
    return model, study


def _pacs_study(args):
    """A study read from the PACS; --view and file priors do not apply (the PACS says the views)."""
    from cxrlm.errors import ConfigError

    if args.images or args.view or (getattr(args, "prior", None) and not args.prior == ["auto"]):
        raise ConfigError("--study/--pacs-query read the study from the PACS: drop the IMAGE files, --view and "
                          "file --prior (use --prior auto)")
    return load_pacs_study(args)


def _check_image_count(current: int, prior: int) -> None:
    from cxrlm.errors import InputError
    from cxrlm.limits import MAX_IMAGES, too_many_images

    for count, what in ((current, "IMAGE"), (prior, "--prior")):
        if refusal := too_many_images(count, MAX_IMAGES, f"give at most {MAX_IMAGES} {what} files"):
            raise InputError(refusal)


def _read_text(path: str, what: str) -> str:
    """A text file, refused past MAX_TEXT_CHARS without reading further."""
    from cxrlm.errors import InputError
    from cxrlm.limits import MAX_TEXT_CHARS

    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(MAX_TEXT_CHARS + 1)
    except OSError as err:
        raise InputError(f"cannot read {what} {path}: {err.strerror}") from None
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"{what} {path} has more than {MAX_TEXT_CHARS:,} characters: shorten it")
    return text.strip()


def _views(text: str, n_images: int) -> list[str]:
    """--view PA,LL: one view per image, in order; a single value applies to every image."""
    from cxrlm.errors import InputError

    views = [part.strip() for part in text.split(",")]
    if len(views) == 1:
        return views * n_images
    if len(views) != n_images:
        raise InputError(f"--view names {len(views)} views for {n_images} image(s): give one per image, in order "
                         "(e.g. --view PA,LL), or one for all")
    return views


def run_report(args) -> int:
    from cxrlm.chat import Session
    from cxrlm.prompts.templates import task_prompt

    if is_folder_run(args):
        return run_folder(args, Task.REPORT)
    if args.store_sr and not is_pacs_run(args):
        from cxrlm.errors import ConfigError

        raise ConfigError("--store-sr files the SR into the PACS study it was read from: add --study UID")
    if args.export == "sr" and not args.out:
        from cxrlm.errors import ConfigError

        raise ConfigError("--export sr writes a binary DICOM file: add --out REPORT.dcm")
    model, study = _load(args)
    session = Session(model, study, args.max_new_tokens)
    out = session.report()
    differentials = None
    if args.export:  # every structured report has the section: kept only where the answer lists diagnoses
        differentials = session.ask(task_prompt(model.dialect, "differentials")).raw_text
    if args.show_prompt:
        _show_prompts(session)
    if args.store_sr:
        store_result(args, out)
    if args.export:
        _write_export(out, study, differentials, args)
    else:
        _emit(out, args.json)
    return 0


def _attach_prior(study, args) -> None:
    from cxrlm.io import load_study

    if args.prior:
        study.prior = load_study(args.prior)
    if args.prior_report:
        study.prior_report = _read_text(args.prior_report, "--prior-report")


def _show_prompts(session) -> None:
    """Each user turn exactly as sent: image placeholders and text, in the family's chat format."""
    for message in session.messages():
        if message["role"] != "user":
            continue
        content = message["content"]
        parts = [content] if isinstance(content, str) else [
            "<image>" if part["type"] == "image" else part.get("text", "") for part in content
        ]
        print("prompt> " + "".join(parts).replace("\n", "\n        "), file=sys.stderr)


def _write_export(out, study, differentials, args) -> None:
    from cxrlm.export import export

    first = study.images[0]
    source = args.images[0] if args.images and "windowing" in first.metadata else None  # a DICOM file: referenced
    data = export(out, args.export, study, source=source, differentials_text=differentials)
    if args.out:
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(args.out, mode) as f:
            f.write(data)
        print(f"wrote {args.export} report to {args.out}", file=sys.stderr)
    else:
        print(data)


def run_classify(args) -> int:
    if is_folder_run(args):
        return run_folder(args, Task.CLASSIFY)
    labels = _label_names(args.labels) if args.labels else None  # a bad name fails before the model loads
    check_heatmap_label(args, labels or _all_labels())
    model, study = _load(args)
    out = model.predict(study, Task.CLASSIFY, labels=labels)
    if args.heatmap:
        write_heatmap(model, study, out, args)
    _emit(out, args.json)
    return 0


def _all_labels() -> tuple[str, ...]:
    from cxrlm.pathologies import CLASSIFY_LABELS

    return CLASSIFY_LABELS


def _label_names(text: str) -> tuple[str, ...]:
    from cxrlm.errors import InputError
    from cxrlm.pathologies import CLASSIFY_LABELS, canonical_name

    names = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            names.append(canonical_name(item))
        except KeyError:
            raise InputError(f"--labels: {item!r} is not a CheXpert-14 or NIH-14 name; known: "
                             f"{', '.join(CLASSIFY_LABELS)}") from None
    if not names:
        raise InputError("--labels is empty: name at least one label, e.g. --labels Cardiomegaly")
    return tuple(dict.fromkeys(names))


def run_ground(args) -> int:
    if is_folder_run(args):
        return run_folder(args, Task.GROUND)
    model, study = _load(args)
    out = model.predict(study, Task.GROUND, phrase=args.phrase, max_new_tokens=args.max_new_tokens)
    if args.heatmap:
        write_heatmap(model, study, out, args)
    _emit(out, args.json)
    return 0


def run_chat(args) -> int:
    from cxrlm import DISCLAIMER
    from cxrlm.chat import Session
    from cxrlm.errors import InputError
    from cxrlm.limits import MAX_TEXT_CHARS

    model, study = _load(args)
    session = Session(model, study, args.max_new_tokens)
    interactive = sys.stdin.isatty() and not args.json
    stream = None if args.json else _stream
    if not args.json:
        notice = f"[model notice: {model.profile.notice}]\n" if model.profile.notice else ""
        print(f"[{DISCLAIMER}]\n{notice}[model: {model.name}; type a follow-up, or 'exit']\n", file=sys.stderr)
    out = session.reason(on_text=stream)
    _turn(out, args.json)
    while True:
        if interactive:
            print("\nyou> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline(MAX_TEXT_CHARS + 1)  # bounded: a line past the limit is refused unread
        if len(line) > MAX_TEXT_CHARS:
            raise InputError(f"that line has more than {MAX_TEXT_CHARS:,} characters: send a shorter question")
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
