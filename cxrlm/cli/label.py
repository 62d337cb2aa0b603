"""`cxrlm label`: label radiology report text with the rule-based labeler (cxrlm.data.labeler).

A text file prints one line per label (positive / negative / uncertain / not mentioned); a CSV gets one
column per label added to its rows, in the CheXpert labeler's convention: 1, 0, -1, empty when not
mentioned. It labels text only; it does not look at images. With --evaluate, a CSV with gold 0/1 NIH-14 columns
(the OpenI gold standard's layout) is scored instead: precision, recall and F1 per label, as a Markdown table.
"""

import argparse
import csv
import io
import sys
from pathlib import Path

from cxrlm.errors import InputError

_VALUE = {1: "1", 0: "0", -1: "-1", None: ""}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label",
        help="label report text: positive / negative / uncertain per finding (rule-based)",
        description=(
            "Label a radiology report (a text file) or a CSV of reports with the rule-based, negation- and "
            "uncertainty-aware labeler. A CSV keeps its rows and columns and gets one column per label: "
            "1 positive, 0 negative, -1 uncertain, empty when not mentioned."
        ),
    )
    parser.add_argument("input", metavar="REPORT_OR_CSV", help="a report text file, or a .csv file of reports")
    parser.add_argument(
        "--text-columns",
        default="findings,impression",
        help="CSV columns holding the report text, comma-separated (default: findings,impression)",
    )
    parser.add_argument("--vocab", choices=("chexpert14", "nih14"), default="chexpert14", help="label vocabulary")
    parser.add_argument("--out", metavar="OUT.csv", help="where to write the labeled CSV (default: standard output)")
    parser.add_argument("--prefix", default="", help="prefix for the added label columns, e.g. pred_")
    parser.add_argument("--explain", action="store_true", help="text file: also list each mention and its cue")
    parser.add_argument("--evaluate", action="store_true",
                        help="score the labeler on a CSV with gold 0/1 NIH-14 columns; print a Markdown table")
    parser.add_argument("--split", choices=("all", "even", "odd"), default="all",
                        help="--evaluate: score the rows whose uid is even or odd (default: all)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.input)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a report text file or a .csv of reports")
    if args.evaluate:
        return _evaluate(path, args.split)
    if path.suffix.lower() == ".csv":
        return _label_csv(path, args)
    return _label_text(path, args)


def _evaluate(path: Path, split: str) -> int:
    from cxrlm.data import labeler

    scores = labeler.evaluate_gold(str(path), split)
    print(f"{scores['reports']['n']} reports, split={split}")
    print(labeler.score_table(scores))
    return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; give a plain-text report or a .csv of reports") from None


def _label_text(path: Path, args: argparse.Namespace) -> int:
    from cxrlm.data import labeler

    text = _read_text(path)
    if not text.strip():
        raise InputError(f"{path}: the report is empty; give a file with the report text")
    labels = labeler.label_report(text, vocab=args.vocab)
    width = max(map(len, labels))
    for label, value in labels.items():
        print(f"{label:<{width}}  {labeler.STATUS_NAMES[value]}")
    if args.explain:
        print()
        for mention in labeler.explain(text):
            cue = f"  ({mention.cue})" if mention.cue else ""
            print(f"{labeler.STATUS_NAMES[mention.status]:<9}  {mention.concept}: {mention.text!r}{cue}")
    return 0


def _label_csv(path: Path, args: argparse.Namespace) -> int:
    from cxrlm.data import labeler

    columns = [c.strip() for c in args.text_columns.split(",") if c.strip()]
    if not columns:
        raise InputError("--text-columns is empty; name the CSV columns that hold the report text")
    fieldnames, rows = _read_csv(path)
    missing = [c for c in columns if c not in fieldnames]
    if missing:
        raise InputError(
            f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(fieldnames)}); pass --text-columns"
        )
    label_names = labeler.label_names(args.vocab)
    added = [args.prefix + name for name in label_names]
    clash = sorted(set(added) & set(fieldnames))
    if clash:
        raise InputError(f"{path}: already has columns {', '.join(clash)}; pass --prefix (e.g. --prefix pred_)")
    for row in rows:
        labels = labeler.label_report(**_report(row, columns), vocab=args.vocab)
        row.update({new: _VALUE[labels[name]] for new, name in zip(added, label_names)})
    _write_csv(rows, [*fieldnames, *added], args.out)
    return 0


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        rows = list(reader)
    except csv.Error as err:
        raise InputError(f"{path}: not a readable CSV ({err}); check the file format") from None
    if not reader.fieldnames or not rows:
        raise InputError(f"{path}: no rows; give a CSV with a header line and one report per row")
    return list(reader.fieldnames), rows


def _report(row: dict, columns: list[str]) -> dict:
    """findings/impression columns go to their sections; any other text columns are joined as one report."""
    values = {c: (row.get(c) or "") for c in columns}
    if {c.lower() for c in columns} <= {"findings", "impression"}:
        return {c.lower(): v for c, v in values.items()}
    return {"text": "\n\n".join(v for v in values.values() if v.strip())}


def _write_csv(rows: list[dict], fieldnames: list[str], out: str | None) -> None:
    if out is None:
        _write_rows(sys.stdout, rows, fieldnames)
        return
    try:
        with open(out, "w", newline="", encoding="utf-8") as handle:
            _write_rows(handle, rows, fieldnames)
    except OSError as err:
        raise InputError(f"cannot write {out}: {err.strerror}; check the --out path") from None
    print(f"labeled {len(rows)} reports -> {out}", file=sys.stderr)


def _write_rows(handle, rows: list[dict], fieldnames: list[str]) -> None:
    writer = csv.DictWriter(handle, fieldnames=fieldnames, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
