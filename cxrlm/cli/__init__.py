"""The `cxrlm` command. Each verb lives in its own module under cxrlm/cli/ and registers itself here.

Verb modules import only the standard library at top level, so `cxrlm --help` is instant; heavy
imports (torch, transformers, pydicom) happen inside the function that runs the verb.
"""

import argparse
import os
import sys

from cxrlm import DISCLAIMER, __version__
from cxrlm.cli import calibrate, data, gate, infer, label, mcp_server, models, pacs, serve, study, train
from cxrlm.cli import eval as evaluate
from cxrlm.errors import CxrlmError, one_line

# One line per verb module; each defines `register(subparsers)`.
VERB_MODULES = (
    infer,  # report, chat, classify, ground
    models,  # models
    data,  # data build, data instructions
    label,  # label
    train,  # train sft, train grpo, train tiny (tiny.py)
    serve,  # serve
    study,  # study create, results, teaching-file
    pacs,  # pacs search, pacs read, pacs watch (pacs_watch.py)
    mcp_server,  # mcp
    gate,  # gate check, gate fit
    calibrate,  # calibrate
    evaluate,  # eval; eval compare, reasoning, rewards (checks.py), cnn-baselines, tower-probe (tiny.py)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrlm",
        description="Chest X-ray reasoning vision-language models: run, evaluate, train, serve.",
        epilog=DISCLAIMER,
    )
    parser.add_argument("--version", action="version", version=f"cxrlm {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in VERB_MODULES:
        module.register(subparsers)
    return parser


def quiet_threads() -> None:
    """OpenMP threads that wait passively: by default idle ones spin, and on a busy few-core machine the spinning
    steals the cores the working threads need (grounding was 4x slower under --engine hf; issue 36). Set before
    torch loads its OpenMP runtime, which reads it once; a user's own OMP_WAIT_POLICY is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    quiet_threads()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except CxrlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cxrlm ... | head`
        return 0
    except Exception as err:  # a bug, not a user error: stay one line unless asked
        if os.environ.get("CXRLM_DEBUG"):
            raise
        message = one_line(f"unexpected {type(err).__name__}: {err}")
        print(f"error: {message} (set CXRLM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
