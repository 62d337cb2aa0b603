"""How many reports per second the rule-based labeler labels on one core.

    python benchmarks/labeler_speed.py [--csv PATH] [--repeat 3]

Reads the findings and impression of the IU X-ray reports in ../shared/data when present (else a CSV
given with --csv), labels them all `--repeat` times in one process and prints the best rate, in CPU
time (immune to other processes on a shared machine) and wall time. The first call, which compiles
the lexicon, is timed separately.
"""

import argparse
import csv
import time
from pathlib import Path

from cxrlm.data import labeler

DEFAULT_CSV = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "iu-xray-reports" / "reports_with_gold_labels.csv"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="CSV with findings and impression columns")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with open(args.csv, newline="", encoding="utf-8") as handle:
        reports = [{"findings": r["findings"], "impression": r["impression"]} for r in csv.DictReader(handle)]

    start = time.perf_counter()
    labeler.label_report("No pneumothorax.")
    print(f"first call (compiles the lexicon): {1000 * (time.perf_counter() - start):.0f} ms")

    best_cpu = best_wall = float("inf")
    for _ in range(args.repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        for vocab in ("chexpert14", "nih14"):
            labeler.label_reports(reports, vocab=vocab)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    n = 2 * len(reports)
    chars = sum(len(r["findings"]) + len(r["impression"]) for r in reports) / len(reports)
    print(f"{n} labelings of {len(reports)} reports (mean {chars:.0f} characters), best of {args.repeat}:")
    print(f"  {n / best_cpu:,.0f} reports/s CPU time, {n / best_wall:,.0f} reports/s wall time, one core")


if __name__ == "__main__":
    main()
