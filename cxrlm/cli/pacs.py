"""`cxrlm pacs search`: chest radiograph studies on a PACS, as handles; `cxrlm pacs read STUDY`: report on one
(optionally with its prior, optionally filing the SR back). docs/PACS.md.

The search table shows a study's handle (a one-way hash of its UID), date, modalities and counts: enough to pick
one and read it, nothing that names the patient (no name, ID, birth date, accession number, description).
"""

import json
import sys

from cxrlm.cli.gate import add_gate_option
from cxrlm.cli.model_options import add_model_options
from cxrlm.cli import pacs_watch
from cxrlm.cli.pacs_source import add_pacs_source


def register(subparsers) -> None:
    parser = subparsers.add_parser("pacs", help="search a PACS (DICOMweb) and report on its studies")
    verbs = parser.add_subparsers(dest="pacs_verb", metavar="VERB", required=True)

    search = verbs.add_parser("search", help="chest radiograph (CR/DX) studies, newest first, as handles")
    add_pacs_source(search, study=False)
    search.add_argument("--patient", metavar="ID", help="the patient's ID on the PACS (used for the query only)")
    search.add_argument("--from", dest="date_from", metavar="DATE", help="studies on or after DATE (YYYY-MM-DD)")
    search.add_argument("--to", dest="date_to", metavar="DATE", help="studies on or before DATE (YYYY-MM-DD)")
    search.add_argument("--limit", type=int, default=None, metavar="N", help="refuse more than N matches")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.set_defaults(run=run_search)

    read = verbs.add_parser("read", help="report on a study: reasoning, labels, findings and impression")
    read.add_argument("study", metavar="STUDY", help="a handle from `cxrlm pacs search`, or a StudyInstanceUID")
    add_pacs_source(read, study=False)
    read.add_argument("--prior", choices=("auto", "none"), default="none",
                      help="auto: also read the patient's latest earlier chest radiograph study and its report")
    read.add_argument("--store-sr", action="store_true",
                      help="file the result as a preliminary DICOM SR (PARTIAL, UNVERIFIED) into the study")
    add_model_options(read)
    read.add_argument("--json", action="store_true", help="print the JSON output schema instead of text")
    read.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per answer")
    add_gate_option(read)
    read.set_defaults(run=run_read)

    pacs_watch.register(verbs)  # watch: a preliminary SR for each new study, exactly once


def run_search(args) -> int:
    from cxrlm import DISCLAIMER
    from cxrlm.cli.pacs_source import show_date, open_client, query_filters

    filters = query_filters(args.pacs_query)  # a bad filter fails before the network
    if args.limit is not None and args.limit < 1:
        from cxrlm.errors import ConfigError

        raise ConfigError("--limit must be at least 1")
    client = open_client(args)
    found = client.search_studies(patient_id=args.patient, date_from=_day(args.date_from, "--from"),
                                  date_to=_day(args.date_to, "--to"), filters=filters, limit=args.limit)
    rows = [{"study": s.handle, "date": show_date(s.date), "modalities": "/".join(s.modalities),
             "series": s.series, "images": s.instances} for s in found]
    if args.json:
        print(json.dumps({"studies": rows, "notice": DISCLAIMER}, indent=2))
        return 0
    print(f"{'STUDY':<12} {'DATE':<10} {'MODALITY':<9} {'SERIES':>6} {'IMAGES':>6}")
    for row in rows:
        print(f"{row['study']:<12} {row['date']:<10} {row['modalities'][:9]:<9} {_n(row['series']):>6} "
              f"{_n(row['images']):>6}")
    print(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} on {client.shown_url}; read one with "
          f"`cxrlm pacs read STUDY` [{DISCLAIMER}]", file=sys.stderr)
    return 0


def run_read(args) -> int:
    from cxrlm.cli.infer import run_report

    # `pacs read` is `report --study STUDY` with the PACS's own views and no file inputs.
    args.images, args.view, args.prior_report, args.export, args.out, args.show_prompt = [], None, None, None, None, False
    args.prior = ["auto"] if args.prior == "auto" else []
    return run_report(args)


def _day(text: str | None, option: str) -> str | None:
    """YYYY-MM-DD (or YYYYMMDD) as the YYYYMMDD a QIDO date range takes."""
    from datetime import date

    if not text:
        return None
    try:
        return date.fromisoformat(text.strip()).strftime("%Y%m%d")
    except ValueError:
        from cxrlm.errors import ConfigError

        raise ConfigError(f"{option} takes a date as YYYY-MM-DD") from None


def _n(value) -> str:
    return "-" if value is None else str(value)
