"""The long fuzz run: many seeded corpora of malformed files through `load_image` and the CLI, in one process.

    python scripts/fuzz_inputs.py --files 2000 --seeds 0 1 2 3 4 --folder /tmp/cxrlm-fuzz

The corpus is tests/fuzz_corpus.py's (the suite's fuzz test runs 300 files of seed 0). Prints, per maker, how many
files loaded and how many were refused, the slowest file and the peak resident memory; then every file whose
outcome is not allowed (an unhandled exception, a message that is not one short line, an identifying value that
came out, a single gray level loaded silently, an exit code other than 2 or more than one stderr line from the CLI).
Exits 1 if there is any. The files stay in --folder, named `NNNN-<maker>.<ext>`, to reproduce one.
"""

import argparse
import contextlib
import io
import resource
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_corpus import build_corpus, load_problem, message_problem  # noqa: E402

from cxrlm.cli import main  # noqa: E402
from cxrlm.errors import MESSAGE_LIMIT  # noqa: E402


def cli_problem(path: Path, missing_model: Path) -> str | None:
    """`cxrlm classify FILE`: a file that loads then fails on the (missing) model, so every outcome is one line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["classify", str(path), "--model", str(missing_model)])
    lines = err.getvalue().splitlines()
    if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or "unexpected" in lines[0]:
        return f"{path.name}: CLI exit {code}, stderr {err.getvalue()[:300]!r}"
    return message_problem(path.name, lines[0], MESSAGE_LIMIT, own=False)


def run(paths: list[Path], missing_model: Path, with_cli: bool):
    outcomes, problems, slowest = defaultdict(Counter), [], (0.0, "")
    for path in paths:
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as escaped:
            warnings.simplefilter("always")
            problem = load_problem(path)
        seconds = time.perf_counter() - start
        slowest = max(slowest, (seconds, path.name))
        maker = path.stem.split("-", 1)[1]
        outcomes[maker]["problem" if problem else "ok"] += 1
        problems += [problem] if problem else []
        problems += [f"{path.name}: a warning escaped: {str(w.message)[:200]!r}" for w in escaped]
        if with_cli and (problem := cli_problem(path, missing_model)):
            problems.append(problem)
    return outcomes, problems, slowest


def main_cli(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="files per seed (default: 1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="corpus seeds (default: 0 1 2)")
    parser.add_argument("--folder", type=Path, default=Path("fuzz-corpus"), help="where the files are written")
    parser.add_argument("--no-cli", action="store_true", help="only load_image, not `cxrlm classify` too")
    args = parser.parse_args(argv)
    total, problems, slowest = defaultdict(Counter), [], (0.0, "")
    start = time.perf_counter()
    for seed in args.seeds:
        paths = build_corpus(args.folder / f"seed-{seed}", args.files, seed)
        outcomes, found, worst = run(paths, args.folder / "no-model", not args.no_cli)
        for maker, counts in outcomes.items():
            total[maker].update(counts)
        problems += found
        slowest = max(slowest, worst)
    for maker, counts in sorted(total.items()):
        print(f"{maker:28s} allowed {counts['ok']:5d}  problems {counts['problem']:4d}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    files = args.files * len(args.seeds)
    print(f"{files} files in {time.perf_counter() - start:.0f} s; slowest load {slowest[0]:.2f} s ({slowest[1]}); "
          f"peak resident memory {peak_mb:.0f} MB; {len(problems)} problem(s)")  # fmt: skip
    for problem in problems:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main_cli())
