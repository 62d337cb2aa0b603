"""`cxrlm pacs watch`: file a preliminary SR for every new chest radiograph study on a PACS (cxrlm/pacs/watch.py).

Registered under the `cxrlm pacs` verb (cxrlm/cli/pacs.py calls `register`). Prints a progress line on stderr
(processed, queued, failed, rate) and, when it stops (--once, SIGINT, SIGTERM), a JSON summary on stdout; exit
status 1 when it stopped with the PACS unreachable.
"""

import argparse
import os
from datetime import date
from pathlib import Path

from cxrlm.cli.gate import add_gate_option
from cxrlm.cli.model_options import add_model_options, load_model_from_args
from cxrlm.cli.pacs_source import add_pacs_source, open_client, query_filters

STATE_ENV = "CXRLM_WATCH_STATE"


def default_state() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".local" / "share" / "cxrlm" / "pacs-watch.sqlite")


def register(pacs_subparsers) -> None:
    parser = pacs_subparsers.add_parser(
        "watch", help="file a preliminary DICOM SR for each new chest radiograph study, exactly once",
        description="Poll the PACS (QIDO-RS) for CR/DX studies, read each through the input gate, run the model and "
                    "store its PARTIAL/UNVERIFIED SR into the study (STOW-RS). Each study is processed once, across "
                    "restarts; docs/PACS.md#watch-mode.")
    add_model_options(parser)
    add_pacs_source(parser, study=False)  # --pacs URL, --pacs-query KEY=VALUE (narrows each poll)
    parser.add_argument("--state", type=Path, default=None, metavar="FILE",
                        help=f"the watch's SQLite state (default: ${STATE_ENV} or ~/.local/share/cxrlm/"
                             "pacs-watch.sqlite); one watcher per file")
    parser.add_argument("--once", action="store_true", help="process what is there now, then exit (tests, cron)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--days", type=int, default=2, metavar="N",
                      help="look at studies of the last N days by StudyDate, today included (default 2)")
    when.add_argument("--since", metavar="YYYY-MM-DD", help="look at studies from this StudyDate on, instead")
    parser.add_argument("--interval", type=float, default=30.0, metavar="S", help="seconds between polls (default 30)")
    parser.add_argument("--max-queue", type=int, default=64, metavar="N",
                        help="studies taken from one poll; the rest wait for the next (default 64)")
    parser.add_argument("--max-attempts", type=int, default=3, metavar="N",
                        help="attempts per study before it is marked failed (default 3)")
    parser.add_argument("--backoff", type=float, default=2.0, metavar="S",
                        help="first retry delay, doubled per attempt with jitter (default 2)")
    parser.add_argument("--backoff-cap", type=float, default=300.0, metavar="S", help="longest retry delay (300)")
    parser.add_argument("--prior", choices=("auto", "none"), default="auto",
                        help="auto: give the model the patient's most recent earlier chest study (default)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per answer")
    parser.add_argument("--retry-failed", action="store_true",
                        help="give the studies marked failed another round of attempts")
    add_gate_option(parser)
    parser.set_defaults(run=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    import json
    import signal
    import sys
    import threading

    from cxrlm import DISCLAIMER
    from cxrlm.errors import ConfigError
    from cxrlm.pacs.watch import Watcher, WatchOptions, summary
    from cxrlm.pacs.watch_state import WatchState

    for name in ("max_queue", "max_attempts", "days"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.interval <= 0 or args.backoff <= 0 or args.backoff_cap < args.backoff:
        raise ConfigError("--interval and --backoff must be positive, and --backoff-cap at least --backoff")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    options = WatchOptions(
        interval_s=args.interval, max_queue=args.max_queue, max_attempts=args.max_attempts, backoff_s=args.backoff,
        backoff_cap_s=args.backoff_cap, days=args.days, since=_since(args), once=args.once, prior=args.prior == "auto",
        gate=args.gate, max_new_tokens=args.max_new_tokens, filters=query_filters(args.pacs_query))
    client = open_client(args)  # the URL and credentials are checked before the model loads
    state = WatchState(args.state or default_state())
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # finish the study in hand, then stop
        signal.signal(signum, lambda *_: stop.set())
    try:
        if args.retry_failed:
            state.retry_failed()
        model = load_model_from_args(args)
        print(f"cxrlm pacs watch: {model.name} on {client.shown_url}, state {state.path}. {DISCLAIMER}",
              file=sys.stderr, flush=True)
        progress = Watcher(model, client, state, options, stop).run()
        print(json.dumps(summary(state, progress), indent=2))
    finally:
        state.close()
    return 1 if progress.pacs_down else 0  # --once gave up on an unreachable PACS: a cron job should hear of it


def _since(args) -> date | None:
    from cxrlm.errors import ConfigError

    if args.since:
        try:
            return date.fromisoformat(args.since)
        except ValueError:
            raise ConfigError(f"--since {args.since!r}: give a date as YYYY-MM-DD") from None
    return None

