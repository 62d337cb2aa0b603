"""`classify` with one label against all 22, before and after the shared prefix (issue 36's "at most 3x one label").

    OMP_NUM_THREADS=2 python benchmarks/classify_prefix.py                  # cxrlm-tiny and a 0.5B-shaped VLM
    OMP_NUM_THREADS=2 python benchmarks/classify_prefix.py --models cxrlm-tiny --repeats 5

"before": every question a whole conversation in one padded batch (the image processed, encoded and prefilled once
per label); "after": the image encoded and the common prompt prefix prefilled once, the question endings scored
over its cache (HFEngine._shared_prefix_logits). One label takes the whole-conversation path either way. Models:
the shipped weights/cxrlm-tiny, and a Qwen2.5-VL with Qwen2.5-0.5B's text shapes (random weights, the real
151,936-token vocabulary, cxrlm-tiny's tokenizer and vision tower, images capped at --side x --side pixels) built as benchmarks/generation.py
builds its models. End to end through `CxrModel.classify` on a real NIH image; medians after one warm-up. Prints a
Markdown table and appends it to benchmarks/RESULTS.md with the device, versions and command.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
IMAGE = ROOT.parent / "shared" / "data" / "nih14" / "images" / "00000100_000.jpg"
QWEN25_05B = {  # Qwen2.5-0.5B-Instruct's config.json
    "text": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2},
    "vision": {}, "vocab_size": 151936,
}


def load(name: str, side: int):
    """A CxrModel on the hf engine, CPU, float32."""
    import torch

    from cxrlm.models import load_model

    if name == "cxrlm-tiny":
        return load_model(ROOT / "weights" / "cxrlm-tiny", device="cpu")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import generation
    from transformers import AutoTokenizer

    from cxrlm.engines.hf import HFEngine
    from cxrlm.models import tiny
    from cxrlm.models.base import CxrModel
    from cxrlm.models.profiles import PROFILES

    generation.ARCHS["qwen2.5-0.5b"] = {**QWEN25_05B, "max_pixels": side * side}
    # cxrlm-tiny's shipped tokenizer, not generation.py's seed-corpus one (which splits the question into about
    # twice as many tokens as a real tokenizer does, inflating the endings that classify cannot share).
    shipped = AutoTokenizer.from_pretrained(ROOT / "weights" / "cxrlm-tiny")
    seed_tokenizer, tiny.train_tokenizer = tiny.train_tokenizer, lambda corpus: shipped
    try:
        model, processor = generation.build("qwen2.5-0.5b", "cpu", torch.float32)
    finally:
        tiny.train_tokenizer = seed_tokenizer
    return CxrModel(name, PROFILES["nv-reason-cxr"], HFEngine(model, processor, "cpu"))


def medians(model, study, repeats: int, before: bool) -> tuple[float, float | None, float]:
    """Median seconds of (1 label, 22 labels before, 22 labels after), the three run in turn each repeat, so a
    busy host slows them alike."""
    from cxrlm.pathologies import CLASSIFY_LABELS

    runs = {"one": (CLASSIFY_LABELS[:1], True), "before": (CLASSIFY_LABELS, False), "after": (CLASSIFY_LABELS, True)}
    if not before:
        del runs["before"]
    times = {name: [] for name in runs}
    for repeat in range(repeats + 1):  # the first round warms up
        for name, (labels, shared) in runs.items():
            if not shared:  # the whole-conversation path, as before
                model.engine._shared_prefix_logits = lambda *args: None
            start = time.perf_counter()
            model.classify(study, labels)
            if repeat:
                times[name].append(time.perf_counter() - start)
            model.engine.__dict__.pop("_shared_prefix_logits", None)
    one, after = statistics.median(times["one"]), statistics.median(times["after"])
    return one, statistics.median(times["before"]) if before else None, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["cxrlm-tiny", "qwen2.5-0.5b-shaped"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", type=int, default=224, help="the 0.5B-shaped model's image cap: side x side pixels")
    parser.add_argument("--no-before", action="store_true", help="skip the slow whole-conversation runs")
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import torch
    import transformers

    from cxrlm.io import load_image
    from cxrlm.types import Study

    study = Study(images=[load_image(IMAGE)])
    lines = ["| model | 1 label | 22 labels, before | 22 labels, after | before / 1 label | after / 1 label |",
             "|---|---|---|---|---|---|"]
    for name in args.models:
        model = load(name, args.side)
        one, before, after = medians(model, study, args.repeats, not args.no_before)
        shown = f"{before:.2f} s | " if before else "- | "
        ratio = f"{before / one:.1f}x | " if before else "- | "
        if name != "cxrlm-tiny":
            name += f" ({args.side}x{args.side} image cap)"
        lines.append(f"| {name} | {one:.2f} s | {shown}{after:.2f} s | {ratio}{after / one:.1f}x |")
        print(lines[-1], flush=True)
    report = "\n".join([
        f"\n## classify: one label against 22, shared prefix ({datetime.now(UTC):%Y-%m-%d})\n",
        (f"Device: CPU ({platform.machine()}, {torch.get_num_threads()} threads, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; a shared 2-core host); torch {torch.__version__}, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}. Medians of {args.repeats} "
        f"runs after a warm-up, end to end through `CxrModel.classify`, hf engine, float32, one NIH image. "
        f"Command: `python benchmarks/classify_prefix.py {' '.join(sys.argv[1:])}`\n"),
        *lines, ""])
    print(report)
    if not args.no_append:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
