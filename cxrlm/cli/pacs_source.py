"""A PACS as the source of `cxrlm report|classify|ground|chat` and `cxrlm pacs read`: --pacs, --study, --pacs-query,
--prior auto and --store-sr (cxrlm.pacs; docs/PACS.md).

What is printed of a study is its handle (cxrlm.pacs.study_handle) and date; never its UIDs or a patient attribute.
"""

import argparse
import sys


def add_pacs_source(parser: argparse.ArgumentParser, study: bool = True) -> None:
    group = parser.add_argument_group("PACS source (DICOMweb; credentials from the environment, docs/PACS.md)")
    group.add_argument("--pacs", metavar="URL", help="the PACS's DICOMweb root (default: $CXRLM_PACS_URL)")
    if study:
        group.add_argument("--study", metavar="UID|HANDLE",
                           help="read this study from the PACS: a StudyInstanceUID, or a handle from `cxrlm pacs "
                                "search`")
    group.add_argument("--pacs-query", action="append", default=[], metavar="KEY=VALUE",
                       help="QIDO filter, repeatable, e.g. PatientID=123 or StudyDate=20240101-: without --study "
                            "the newest matching chest radiograph study is read")


def is_pacs_run(args) -> bool:
    return bool(getattr(args, "study", None) or getattr(args, "pacs_query", None))


def query_filters(items: list[str]) -> dict[str, str]:
    from cxrlm.errors import ConfigError, quote
    from cxrlm.pacs.client import QUERY_KEYS

    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in QUERY_KEYS or not value or len(value) > 64 or not value.isprintable():
            raise ConfigError(f"--pacs-query '{quote(key)}=...': give KEY=VALUE with KEY one of "
                              f"{', '.join(QUERY_KEYS)} and a value of 1-64 printable characters")
        filters[key] = value
    return filters


def open_client(args):
    from cxrlm.pacs import PacsClient

    return PacsClient.from_env(getattr(args, "pacs", None))


def load_pacs_study(args):
    """The study (and, with --prior auto, its prior) read from the PACS; keeps the client and PacsStudy on `args`
    for --store-sr. Returns the cxrlm.types.Study every model call takes."""
    from cxrlm.pacs import read_prior, read_study

    client = open_client(args)
    filters = query_filters(args.pacs_query)
    if args.study:
        info = client.study(args.study, filters)
    else:
        found = client.search_studies(filters=filters)
        if not found:
            raise _no_match(client)
        info = found[0]
        if len(found) > 1:
            print(f"study {info.handle} ({show_date(info.date)}): the newest of {len(found)} matches", file=sys.stderr)
    pacs_study = read_study(client, info)
    if _prior_auto(args):
        prior = read_prior(client, pacs_study)
        if prior is None:
            print("prior: none (no earlier chest radiograph study of this patient on the PACS)", file=sys.stderr)
        else:
            report = "its report from an SR" if pacs_study.prior_report_found else "no stored report"
            print(f"prior: study {prior.handle} ({show_date(prior.info.date)}), {len(prior.study.images)} image(s), "
                  f"{report}", file=sys.stderr)
    args.pacs_opened = (client, pacs_study)
    return pacs_study.study


def check_prior_option(args) -> None:
    """--prior auto needs a PACS source; other --prior values are image files."""
    from cxrlm.errors import ConfigError

    if _prior_auto(args) and not is_pacs_run(args):
        raise ConfigError("--prior auto finds the prior on a PACS: add --study UID (or --pacs-query), or give the "
                          "prior's image files")
    if _prior_auto(args) and getattr(args, "prior_report", None):
        raise ConfigError("--prior auto takes the prior report from the PACS: drop --prior-report")


def store_result(args, output) -> None:
    """--store-sr: file the output as a preliminary SR into the source study."""
    from cxrlm.pacs import store_sr

    client, pacs_study = args.pacs_opened
    store_sr(client, pacs_study, output)
    print(f"stored a preliminary SR (PARTIAL, UNVERIFIED, research use only) into study {pacs_study.handle} on "
          f"{client.shown_url}", file=sys.stderr)


def _prior_auto(args) -> bool:
    return list(getattr(args, "prior", None) or []) == ["auto"]


def _no_match(client):
    from cxrlm.pacs import PacsError

    return PacsError(f"no chest radiograph (CR/DX) study on the PACS at {client.shown_url} matches --pacs-query: "
                     "check the filters with `cxrlm pacs search`")


def show_date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else "no date"
