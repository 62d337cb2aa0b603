"""Generation speed of every engine side by side, on the same random weights of a named architecture.

    python benchmarks/generation.py --arch qwen2.5-0.5b        # CPU: hf, hf-static, fast, fast-int8, vllm, llama.cpp
    python benchmarks/generation.py --arch qwen2.5-vl-3b       # a GPU: NV-Reason-CXR-3B's shapes
    python benchmarks/generation.py --arch tiny --max-new-tokens 8 --concurrency 1,4 --no-append   # a smoke run

Builds the model in memory from the published config values (random weights: speed only, never answers) and one
image (512x512 on a GPU; 112x112 on the CPU, where 64 prefills of a bigger one would not fit 10 minutes), in bf16 on
a GPU and fp32 on the CPU (bf16 prefill is several times slower than fp32 on AVX2/AVX-512 CPUs without AMX; int8
is the CPU's faster decode path), and measures each engine in turn: tokens/s with 1/4/16/64 concurrent requests, time to the first
token (TTFT), peak memory, and at one request the decode rate as a fraction of the memory-bandwidth floor. Every
request makes exactly --max-new-tokens tokens (end-of-sequence is switched off, as vLLM's `ignore_eos`), so every
engine does the same work. Engines:
  hf         one padded batch of N conversations through transformers' `generate` (no scheduler)
  hf-static  the same with `cache_implementation="static"`
  fast       cxrlm's engine, N `submit` calls at once (on a CPU with its fp32 weights packed for oneDNN, as it
             runs by default); fast-int8 the same after `--quantize int8` (CPU only). Both change their model in
             place, so each gets its own copy of the same seeded weights
  vllm       vLLM in-process in its own interpreter ($CXRLM_VLLM_PYTHON, e.g. .venv-vllm/bin/python from
             scripts/setup_vllm_cpu.sh: its venv pins another torch), on a checkpoint folder this script writes
             from the same weights
  llama.cpp  the language model alone, exported to GGUF (f32 and q8_0), one request, fed the same number of prompt
             tokens (text tokens: llama.cpp runs no Qwen2.5-VL vision tower here); needs llama-cpp-py-sync and gguf
An engine that cannot run here gets its reason in the table instead of numbers. Time to first token: hf's from a
streamer at batch 1 (transformers streams one sequence), fast's per request from `submit` (median at 64), vllm's
from a one-token request, llama.cpp's from the prompt's decode. "decode tok/s @1" is (tokens - 1) / (seconds after
the first token) at batch 1.

The floor: decoding one token reads every weight of the language model once (the embedding table only one row),
so one request cannot decode faster than copy bandwidth / those bytes. Bandwidth is measured here as the bytes
read plus written per second by a 1 GiB tensor copy (`torch.Tensor.copy_`, best of 5, the benchmark's threads);
the bytes are the weights in the run's dtype (fp32 on the CPU; fast-int8 is measured against the same fp32 floor).
Each engine is measured after one warm-up request; every figure is the median of --repeats runs (default 3).
Prints a Markdown table and appends it to benchmarks/RESULTS.md with the device, versions, token counts and the
command.
"""

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

ARCHS = {
    # Qwen2.5-VL-3B-Instruct's config.json (NV-Reason-CXR-3B keeps the architecture).
    "qwen2.5-vl-3b": {
        "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                 "num_attention_heads": 16, "num_key_value_heads": 2},
        "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                   "fullatt_block_indexes": [7, 15, 23, 31]},
        "vocab_size": 151936, "max_pixels": 1024 * 28 * 28,
    },
    # Qwen2.5-0.5B-Instruct's text shapes (and vocabulary) under cxrlm-tiny's small vision tower.
    "qwen2.5-0.5b": {
        "text": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                 "num_key_value_heads": 2},
        "vision": {}, "vocab_size": 151936, "max_pixels": 448 * 448,
    },
    "tiny": {"text": {}, "vision": {}, "vocab_size": None, "max_pixels": 448 * 448},  # cxrlm.models.tiny's shapes
}
NOTES = []  # lines under the table, added by the engines' measurements
CPU_ENGINES = ("hf", "hf-static", "fast", "fast-int8", "vllm", "llama.cpp")
GPU_ENGINES = ("hf", "hf-static", "fast", "vllm")


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


# --- the floor -------------------------------------------------------------------------------------------------

def copy_bandwidth(device: str) -> float:
    """Bytes read plus written per second by a 1 GiB tensor copy, best of 5."""
    import torch

    source = torch.ones(2**28, device=device)  # 1 GiB of fp32, far beyond any cache
    target = torch.empty_like(source)
    target.copy_(source)  # first touch of the pages
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * source.element_size() / best


def weight_bytes(model) -> int:
    """Bytes of weights one decoding step reads: the language model's parameters except the embedding table, of
    which one row is read, and the output head (the same tensor as the table when tied)."""
    embedding = model.get_input_embeddings().weight
    params = {id(p): p for p in model.get_decoder().parameters() if p is not embedding}
    head = model.get_output_embeddings().weight
    params[id(head)] = head
    return sum(p.numel() * p.element_size() for p in params.values())


# --- engines in this process -----------------------------------------------------------------------------------

class FirstToken:
    """A `generate` streamer that notes when the first new token arrives (its first call is the prompt)."""

    def __init__(self):
        self.calls, self.at = 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def hf_runner(engine, image, static: bool):
    """run(batch, new_tokens) -> (seconds for one padded batch through generate, TTFT at batch 1 else None:
    transformers streams only one sequence)."""
    import torch

    engine.processor.tokenizer.padding_side = "left"
    cache = {"cache_implementation": "static"} if static else {}

    def run(batch: int, new_tokens: int):
        first = FirstToken() if batch == 1 else None
        start = time.perf_counter()
        inputs = engine._inputs([conversation(i) for i in range(batch)], [[image]] * batch)
        with torch.inference_mode():
            engine.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, streamer=first, **cache)
        _sync(engine.device)
        return time.perf_counter() - start, first and first.at - start

    return run


def fast_runner(engine, image):
    """run(batch, new_tokens) -> (seconds until all `batch` concurrent requests finish, median TTFT)."""
    from cxrlm.engines.batching import Request

    def run(batch: int, new_tokens: int):
        start = time.perf_counter()
        handles = [engine.submit(Request(conversation(i), [image], new_tokens)) for i in range(batch)]
        results = [h.result() for h in handles]
        assert all(r.new_tokens == new_tokens for r in results)
        return time.perf_counter() - start, statistics.median(r.first_token_s for r in results)

    return run


def measure(run, args) -> dict:
    """tok/s per concurrency, TTFT at 1 and at the highest concurrency, and the batch-1 decode rate."""
    run(1, 2)  # warm-up: allocator, kernels, caches
    row, new = {}, args.max_new_tokens
    for batch in args.concurrency:
        runs = [run(batch, new) for _ in range(args.repeats)]
        seconds = statistics.median(s for s, _ in runs)
        row[f"tok/s @{batch}"] = batch * new / seconds
        if batch == 1:
            one = seconds
        if runs[0][1] is not None:
            row[f"TTFT ms @{batch}"] = 1000 * statistics.median(t for _, t in runs)
        print(f"  batch {batch}: {row[f'tok/s @{batch}']:.1f} tok/s", file=sys.stderr, flush=True)
    if "TTFT ms @1" not in row:  # vllm: a one-token request is prefill plus the first token
        row["TTFT ms @1"] = 1000 * statistics.median(run(1, 1)[0] for _ in range(args.repeats))
    decode_s = one - row["TTFT ms @1"] / 1000
    row["decode tok/s @1"] = (new - 1) / decode_s if decode_s > 0 else None  # None: noise larger than the work
    return row


# --- vLLM, in its own interpreter -------------------------------------------------------------------------------

def vllm_row(model, processor, image, args) -> dict | str:
    """The vllm column, measured by this file's --vllm-worker in $CXRLM_VLLM_PYTHON on a saved copy of the model."""
    python = os.environ.get("CXRLM_VLLM_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory(prefix="cxrlm-bench-") as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        image.save(Path(folder) / "image.png")
        command = [python, __file__, "--vllm-worker", folder, "--max-new-tokens", str(args.max_new_tokens),
                   "--concurrency", ",".join(map(str, args.concurrency)), "--repeats", str(args.repeats),
                   "--dtype", str(model.dtype).removeprefix("torch.")]
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or ["no output"]
        return f"did not run: {lines[-1][:120]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    gpu = ", not GPU memory (vLLM reserves most of the GPU up front)" if args.device != "cpu" else ""
    NOTES.append(f"vllm {result['version']} in {python}, eager (cxrlm.engines.vllm: no CUDA graphs); its peak "
                 f"memory is its own process's resident memory{gpu}.")
    return result["row"]


def vllm_worker(args) -> None:
    """Runs inside vLLM's interpreter: the same measure() on a VllmEngine; prints the row as JSON."""
    import resource

    import vllm
    from PIL import Image
    from transformers import AutoProcessor

    from cxrlm.engines.vllm import VllmEngine

    folder = Path(args.vllm_worker)
    image = Image.open(folder / "image.png").convert("RGB")
    engine = VllmEngine(folder, AutoProcessor.from_pretrained(folder), {}, args.dtype,
                        max_len=4096, max_images=1)

    def run(batch: int, new_tokens: int):
        params = engine.SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
        prompts = engine._prompts([conversation(i) for i in range(batch)], [[image]] * batch)
        start = time.perf_counter()
        outputs = engine.llm.generate(prompts, params, use_tqdm=False)
        assert all(len(o.outputs[0].token_ids) == new_tokens for o in outputs)
        return time.perf_counter() - start, None

    row = measure(run, args)
    row["peak memory GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"row": row, "version": vllm.__version__}))


# --- llama.cpp: the language model alone, batch 1 ---------------------------------------------------------------

def llama_cpp_rows(model, prompt_tokens: int, args) -> dict[str, dict | str]:
    """{"llama.cpp f32": row, "llama.cpp q8_0": row} (benchmarks/gguf_llama.py), or the reason it cannot run. Peak
    memory is left out: this process also holds the transformers model; the GGUF files' sizes go in the notes."""
    import torch

    reason = _llama_cpp_missing()
    if reason:
        return {"llama.cpp": reason}
    if args.device != "cpu":
        return {"llama.cpp": "CPU build only here"}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gguf_llama

    rows = {}
    with tempfile.TemporaryDirectory(prefix="cxrlm-gguf-") as folder:
        f32, q8 = Path(folder) / "f32.gguf", Path(folder) / "q8_0.gguf"
        gguf_llama.quiet()
        gguf_llama.write_gguf(model, f32)
        gguf_llama.quantize_q8_0(f32, q8)
        for name, path in (("llama.cpp f32", f32), ("llama.cpp q8_0", q8)):
            rows[name] = gguf_llama.measure(path, prompt_tokens, args.max_new_tokens, args.repeats,
                                           torch.get_num_threads())
            NOTES.append(f"{name}: the language model only, {prompt_tokens} prompt token ids, GGUF file "
                         f"{path.stat().st_size / 2**30:.2f} GiB.")
            print(f"  {name}: {rows[name]['tok/s @1']:.1f} tok/s", file=sys.stderr, flush=True)
    return rows


def _llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot run here, or None."""
    try:
        import gguf  # noqa: F401
        from llama_cpp_py_sync._cffi_bindings import get_lib
    except ImportError as err:
        return (f"not installed ({err.name}): `pip install llama-cpp-py-sync gguf` (PyPI's llama-cpp-python has no "
                "prebuilt CPU wheel, only a source build of llama.cpp)")
    try:
        get_lib()
    except (OSError, RuntimeError) as err:
        needs = re.search(r"version `(GLIBC_[\d.]+)' not found", str(err))
        if needs:
            return (f"llama-cpp-py-sync's prebuilt libllama needs {needs[1]}, this machine has glibc "
                    f"{platform.libc_ver()[1]} (PyPI's llama-cpp-python has only a source build)")
        return f"libllama does not load: {str(err).splitlines()[0][:160]}"
    return None


# --- the run -------------------------------------------------------------------------------------------------

def measure_engines(processor, image, prompt_tokens: int, dtype, args) -> dict[str, dict | str]:
    """{engine: row of figures, or the reason it did not run}. hf, hf-static, vllm and llama.cpp share one model;
    fast and fast-int8 change theirs in place (oneDNN packing, int8), so each builds its own from the same seed,
    after the shared one is gone: a peak-memory figure counts one model."""
    from cxrlm.engines.fast import FastEngine
    from cxrlm.engines.hf import HFEngine
    from cxrlm.errors import ModelLoadError
    from cxrlm.models import int8

    rows = {}
    shared = [name for name in args.engines if name not in ("fast", "fast-int8")]
    if shared:
        model, _ = build(args.arch, args.device, dtype)
        hf = HFEngine(model, processor, args.device)
    for name in shared:
        print(f"{name}:", file=sys.stderr, flush=True)
        _reset_peak(args.device)
        if name in ("hf", "hf-static"):
            row = measure(hf_runner(hf, image, static=name == "hf-static"), args)
        elif name == "vllm":
            row = vllm_row(model, processor, image, args)
        elif name == "llama.cpp":
            rows.update(llama_cpp_rows(model, prompt_tokens, args))
            continue
        else:
            row = f"unknown engine; choose from {', '.join(CPU_ENGINES)}"
        if isinstance(row, dict):
            row.setdefault("peak memory GiB", _peak_gib(args.device))
        rows[name] = row
    if shared:
        del hf, model
        gc.collect()
    for name in (name for name in args.engines if name not in shared):
        print(f"{name}:", file=sys.stderr, flush=True)
        model, _ = build(args.arch, args.device, dtype)
        try:
            if name == "fast-int8":
                int8.quantize(model, args.device, dtype)
        except ModelLoadError as err:
            rows[name] = str(err)
            continue
        _reset_peak(args.device)
        fast = FastEngine(model, processor, args.device, max_batch=max(args.concurrency),
                          max_len=prompt_tokens + args.max_new_tokens + 16)
        rows[name] = measure(fast_runner(fast, image), args)
        rows[name]["peak memory GiB"] = _peak_gib(args.device)
        fast.close()
        del fast, model
        gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen2.5-vl-3b")
    parser.add_argument("--engines", type=lambda s: s.split(","), help=f"default: {','.join(CPU_ENGINES)} on the "
                        f"CPU, {','.join(GPU_ENGINES)} on a GPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--max-new-tokens", type=int, help="default: 128 on a GPU, 32 on the CPU")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, help="default: 512 on a GPU, 112 on the CPU")
    parser.add_argument("--no-append", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--vllm-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vllm_worker:
        return vllm_worker(args)

    from cxrlm.cli import quiet_threads

    quiet_threads()  # as the cxrlm command runs: idle OpenMP threads sleep (set before torch loads)
    import torch
    import transformers

    from cxrlm.engines.hf import HFEngine
    from cxrlm.models import resolve_device, resolve_dtype

    transformers.logging.set_verbosity_error()
    args.device = resolve_device(args.device)
    gpu = args.device.startswith("cuda")
    args.engines = args.engines or list(GPU_ENGINES if gpu else CPU_ENGINES)
    args.max_new_tokens = args.max_new_tokens or (128 if gpu else 32)
    args.image_size = args.image_size or (512 if gpu else 112)
    dtype = resolve_dtype(args.dtype, args.device)
    model, processor = build(args.arch, args.device, dtype)
    image = xray(args.image_size)
    prompt_tokens = HFEngine(model, processor, args.device)._inputs([conversation(0)], [[image]])["input_ids"].shape[1]
    weights = weight_bytes(model)
    del model  # each engine measures on a model of its own (measure_engines)
    bandwidth = copy_bandwidth(args.device)
    rows = measure_engines(processor, image, prompt_tokens, dtype, args)
    floor = bandwidth / weights
    for row in rows.values():
        if isinstance(row, dict) and row["decode tok/s @1"]:
            row["decode @1 / floor"] = row["decode tok/s @1"] / floor
    report = _report(args, rows, prompt_tokens, bandwidth, weights, dtype, torch, transformers)
    print(report)
    if not args.no_append:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + report + "\n")


def table(rows: dict[str, dict | str], args) -> str:
    names = list(rows)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    metrics = [f"tok/s @{c}" for c in args.concurrency] + [
        "TTFT ms @1", f"TTFT ms @{max(args.concurrency)}", "decode tok/s @1", "decode @1 / floor", "peak memory GiB"]
    for metric in dict.fromkeys(metrics):
        cells = []
        for name in names:
            value = rows[name].get(metric) if isinstance(rows[name], dict) else None
            cells.append("-" if value is None else f"{value:.2f}" if metric.endswith("floor") else f"{value:.1f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    notes = [f"- {name}: {row}" for name, row in rows.items() if isinstance(row, str)] + [f"- {n}" for n in NOTES]
    return "\n".join(lines + ([""] + notes if notes else []))


def _report(args, rows, prompt_tokens, bandwidth, weights, dtype, torch, transformers) -> str:
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    floor = bandwidth / weights
    return "\n".join([
        f"## {args.arch}: engines side by side on {device}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`python benchmarks/generation.py {' '.join(sys.argv[1:])}`  ",
        (f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}; "
         f"{args.image_size}x{args.image_size} image, {prompt_tokens} prompt tokens, {args.max_new_tokens} new tokens "
         f"per request, median of {args.repeats} after a warm-up. Floor: {bandwidth / 1e9:.1f} GB/s copy (read + "
         f"write) / {weights / 1e9:.3g} GB of {str(dtype).removeprefix('torch.')} "
         f"weights per token = {floor:.3g} tok/s for one request."),
        "",
        table(rows, args),
    ])


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    """GPU: the allocator's peak. CPU: the process's resident high-water mark (Linux: /proc/self/clear_refs)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def _peak_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


if __name__ == "__main__":
    main()
