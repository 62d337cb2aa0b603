"""cxrlm-tiny on the CPU: model load time and one full reasoning output per image (issue 6's targets: < 2 s, < 3 s).

    python benchmarks/tiny_cpu.py                       # the shipped weights/cxrlm-tiny, images from ../shared/data
    python benchmarks/tiny_cpu.py --model DIR --images a.png b.dcm --repeats 5

Load: `cxrlm.models.load_model` in a fresh process each repeat, timed after importing torch and transformers
(that import, several seconds on a cold CPU whatever the model, is reported on its own row). Reasoning: `model.predict(image, "reason")`, greedy, up to the profile's
max_new_tokens, end to end (image decode excluded, preprocessing, prefill and decoding included), one image at a
time on --threads threads. The baseline in the same run is the `classify` task on the same images (22 yes/no
questions scored in one batch), so the ratio says what a full written answer costs over one forward pass. Ground:
`model.predict(image, "ground", phrase="right lung")`, whose four coordinates are expected values over numbers. Medians
over the repeats; prints a Markdown table and appends it to benchmarks/RESULTS.md with the device and versions.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_IMAGES = ("nih14/images/00000100_000.jpg", "nih14/images/00000282_000.jpg",
                  "fixtures/dicom/RG1_J2KI_cr_chest_monochrome1_j2k.dcm")
LOAD_SNIPPET = """
import json, time
start = time.perf_counter()
import torch, transformers
from transformers import AutoModelForImageTextToText, AutoProcessor
import cxrlm.engines.hf
torch.set_num_threads({threads})
imported = time.perf_counter()
from cxrlm.models import load_model
load_model({model!r}, device="cpu")
print(json.dumps([imported - start, time.perf_counter() - imported]))
"""


def load_seconds(model: str, threads: int) -> tuple[float, float]:
    """(library imports, model load) in a fresh process."""
    code = LOAD_SNIPPET.format(model=model, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "weights" / "cxrlm-tiny"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--images", nargs="*", help="image files (default: two NIH images and the real DICOM)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    import transformers

    from cxrlm.io import load_image
    from cxrlm.models import load_model

    torch.set_num_threads(args.threads)
    images = [load_image(p) for p in (args.images or [str(Path(args.data) / p) for p in DEFAULT_IMAGES])]
    imports, loads = zip(*(load_seconds(args.model, args.threads) for _ in range(args.repeats)))
    model = load_model(args.model, device="cpu")
    model.predict(images[0], "reason")  # warm-up
    reason, classify, ground, tokens = [], [], [], []
    for _ in range(args.repeats):
        for image in images:
            start = time.perf_counter()
            out = model.predict(image, "reason")
            reason.append(time.perf_counter() - start)
            tokens.append(out.timings.new_tokens)
            start = time.perf_counter()
            model.predict(image, "classify")
            classify.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.predict(image, "ground", phrase="right lung")
            ground.append(time.perf_counter() - start)
    med = statistics.median
    rows = [
        ("load_model: weights, tokenizer, processor (fresh process)", f"{med(loads):.2f} s", "< 2 s"),
        ("before it: importing torch and transformers (any model)", f"{med(imports):.2f} s", "-"),
        ("full reasoning output, one image", f"{med(reason):.2f} s ({med(tokens):.0f} tokens)", "< 3 s"),
        ("classify, 22 labels (baseline: one batched forward)", f"{med(classify):.2f} s", "-"),
        ("reasoning / classify", f"{med(reason) / med(classify):.1f}x", "-"),
        ("ground, one lung box (expected-value coordinates)", f"{med(ground):.2f} s", "-"),
    ]
    table = "\n".join(["| measure | median | target |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)])
    header = (f"\n## cxrlm-tiny on CPU ({datetime.now(UTC):%Y-%m-%d})\n\n"
              f"Device: {platform.processor() or platform.machine()}, {args.threads} threads; Python "
              f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}. "
              f"{len(images)} images x {args.repeats} repeats. Command: `python benchmarks/tiny_cpu.py "
              f"{' '.join(sys.argv[1:])}`\n\n")
    print(header + table)
    with RESULTS.open("a") as handle:
        handle.write(header + table + "\n")
    print(json.dumps({"imports_s": imports, "load_s": loads, "reason_s": reason, "classify_s": classify, "ground_s": ground,
                      "tokens": tokens}))


if __name__ == "__main__":
    main()
