"""Generation speed of the `fast` engine against the `hf` baseline, on a random-weight model of a named architecture.

    python benchmarks/generation.py --arch qwen2.5-vl-3b            # on a GPU: NV-Reason-CXR-3B's shapes
    python benchmarks/generation.py --arch tiny --max-new-tokens 32  # a CPU smoke run

Builds the model in memory from the published config values (random weights: speed only, never answers), one
512x512 image, and measures in one run, for both engines: tokens/s at batch 1, time to the first token, aggregate
tokens/s with 8/32/64 concurrent requests, and peak memory. Every request makes exactly --max-new-tokens tokens
(end-of-sequence is switched off, as vLLM's `ignore_eos`), so both engines do the same work. `hf` at N concurrent is
one padded batch through `model.generate` (what it can do without a scheduler); `fast` gets N `submit` calls at once.
Medians over --repeats runs, after one warm-up run each. Prints a Markdown table and appends it to
benchmarks/RESULTS.md with the device, versions and the command.
"""

import argparse
import platform
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# Qwen2.5-VL-3B-Instruct's config.json (NV-Reason-CXR-3B keeps the architecture).
ARCHS = {
    "qwen2.5-vl-3b": {
        "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                 "num_attention_heads": 16, "num_key_value_heads": 2},
        "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                   "fullatt_block_indexes": [7, 15, 23, 31]},
        "vocab_size": 151936, "max_pixels": 1024 * 28 * 28,
    },
    "tiny": {"text": {}, "vision": {}, "vocab_size": None, "max_pixels": 448 * 448},  # cxrlm.models.tiny's shapes
}


def build(arch: str, device: str, dtype):
    """(model, processor) with random weights; the vocabulary is the real size even if the tokenizer is small."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from cxrlm.models.tiny import SEED_CORPUS, build_config, build_processor, train_tokenizer

    spec = ARCHS[arch]
    tokenizer = train_tokenizer(SEED_CORPUS)
    processor = build_processor(tokenizer, max_pixels=spec["max_pixels"])
    config = build_config(tokenizer, spec["text"], spec["vision"])
    if spec["vocab_size"]:
        config.text_config.vocab_size = spec["vocab_size"]
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.eos_token_id = None  # every request makes exactly max_new_tokens
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model, processor


def conversation(index: int) -> list[dict]:
    text = f"Case {index}. Find abnormalities and support devices, then write a structured report."
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def xray(size: int):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def hf_batch(engine, image, batch: int, new_tokens: int) -> float:
    """Seconds for one padded batch of `batch` conversations through transformers' generate."""
    import torch

    engine.processor.tokenizer.padding_side = "left"
    start = time.perf_counter()
    inputs = engine._inputs([conversation(i) for i in range(batch)], [[image]] * batch)
    with torch.inference_mode():
        engine.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    _sync(engine.device)
    return time.perf_counter() - start


def fast_batch(engine, image, batch: int, new_tokens: int) -> tuple[float, float]:
    """(seconds until all `batch` concurrent requests finish, median time to first token)."""
    from cxrlm.engines.batching import Request

    start = time.perf_counter()
    handles = [engine.submit(Request(conversation(i), [image], new_tokens)) for i in range(batch)]
    results = [h.result() for h in handles]
    assert all(r.new_tokens == new_tokens for r in results)
    return time.perf_counter() - start, statistics.median(r.first_token_s for r in results)


def measure(name: str, engine, image, args) -> dict:
    """Median tokens/s per concurrency, TTFT at batch 1, and peak memory, for one engine."""
    _reset_peak(args.device)
    row = {}
    for batch in args.concurrency:
        timings = []
        for repeat in range(args.repeats + 1):  # the first run warms up (allocator, kernels) and is dropped
            if name == "hf":
                timings.append((hf_batch(engine, image, batch, args.max_new_tokens), None))
            else:
                timings.append(fast_batch(engine, image, batch, args.max_new_tokens))
        seconds = statistics.median(t for t, _ in timings[1:])
        row[f"tok/s @{batch}"] = batch * args.max_new_tokens / seconds
        print(f"{name} batch {batch}: {row[f'tok/s @{batch}']:.1f} tok/s", file=sys.stderr)
    if name == "hf":
        row["TTFT ms"] = 1000 * statistics.median(hf_batch(engine, image, 1, 1) for _ in range(args.repeats + 1))
    else:
        row["TTFT ms"] = 1000 * statistics.median(fast_batch(engine, image, 1, 1)[1] for _ in range(args.repeats + 1))
    row["peak memory GiB"] = _peak_gib(args.device)
    return row


def table(rows: dict[str, dict]) -> str:
    lines = ["| metric | hf | fast | fast / hf |", "|---|---:|---:|---:|"]
    for metric in rows["hf"]:
        hf, fast = rows["hf"][metric], rows["fast"][metric]
        lines.append(f"| {metric} | {hf:.1f} | {fast:.1f} | {fast / hf:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen2.5-vl-3b")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import torch
    import transformers

    from cxrlm.engines.fast import FastEngine
    from cxrlm.engines.hf import HFEngine
    from cxrlm.models import resolve_device, resolve_dtype

    transformers.logging.set_verbosity_error()
    args.device = resolve_device(args.device)
    model, processor = build(args.arch, args.device, resolve_dtype(args.dtype, args.device))
    image = xray(args.image_size)
    prompt_tokens = HFEngine(model, processor, args.device)._inputs([conversation(0)], [[image]])["input_ids"].shape[1]
    start = time.perf_counter()
    fast = FastEngine(model, processor, args.device, max_batch=max(args.concurrency),
                      max_len=prompt_tokens + args.max_new_tokens + 16)
    startup_s = time.perf_counter() - start
    rows = {"hf": measure("hf", HFEngine(model, processor, args.device), image, args),
            "fast": measure("fast", fast, image, args)}
    fast.close()
    report = _report(args, rows, prompt_tokens, startup_s, torch, transformers)
    print(report)
    if not args.no_append:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + report + "\n")


def _report(args, rows, prompt_tokens, startup_s, torch, transformers) -> str:
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    graphs = "CUDA graphs" if args.device.startswith("cuda") else "no CUDA graphs (CPU)"
    return "\n".join([
        f"## {args.arch} on {device}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`python benchmarks/generation.py {' '.join(sys.argv[1:])}`  ",
        (f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}; "
         f"{args.image_size}x{args.image_size} image, {prompt_tokens} prompt tokens, {args.max_new_tokens} new tokens "
         f"per request, median of {args.repeats}; fast engine start-up {startup_s:.1f} s ({graphs})."),
        "",
        table(rows),
    ])


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    """GPU: the allocator's peak since the reset. CPU: the process's peak RSS (covers both engines run so far)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


if __name__ == "__main__":
    main()
