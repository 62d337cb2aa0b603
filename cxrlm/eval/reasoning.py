"""Do a model's reasoning answers parse? Runs `predict(image, "reason")` on a manifest split and counts them.

    cxrlm eval reasoning --model weights/cxrlm-tiny --manifest runs/nih14.jsonl --split val --out r.json

An answer parses when it has a closed `<think>` review and a closed `<answer>` whose every item is a CheXpert-14
label (or "No Finding"); `ModelOutput.warnings` records each way it can fail. Also reported: micro F1 of the
answered labels against the record's positive CheXpert labels (records whose labels are all unknown are
skipped for F1), tokens and seconds per answer, and the first failures' raw text, to see what went wrong.
Not here: the other tasks (cxrlm.eval.runner scores classify, ground and report with intervals), the command
line (cxrlm/cli/checks.py).
"""

from __future__ import annotations

import statistics
import time

from cxrlm.pathologies import CHEXPERT14
from cxrlm.types import Task


def parses(output) -> bool:
    return bool(output.answer) and output.reasoning is not None and not output.warnings and bool(output.labels)


def check(model, records, limit_failures: int = 5) -> dict:
    from cxrlm.io import load_image

    parsed, tp, fp, fn, tokens, seconds, failures = 0, 0, 0, 0, [], [], []
    for record in records:
        image = load_image(record.image_path)
        start = time.perf_counter()
        output = model.predict(image, Task.REASON)
        seconds.append(time.perf_counter() - start)
        tokens.append(output.timings.new_tokens or 0)
        if parses(output):
            parsed += 1
        elif len(failures) < limit_failures:
            failures.append({"image": record.image, "warnings": output.warnings, "raw_text": output.raw_text})
        truth = {n for n in CHEXPERT14 if record.labels.get(n) in (1, -1)}
        if all(record.labels.get(n) is None for n in CHEXPERT14):
            continue
        answered = {label.name for label in output.labels}
        tp, fp, fn = tp + len(answered & truth), fp + len(answered - truth), fn + len(truth - answered)
    n = len(records)
    return {
        "n": n,
        "parsed": parsed,
        "parse_rate": parsed / n if n else None,
        "label_micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "median_tokens": statistics.median(tokens) if tokens else None,
        "median_seconds": statistics.median(seconds) if seconds else None,
        "failures": failures,
    }

