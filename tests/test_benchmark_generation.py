"""benchmarks/generation.py end to end on the tiny architecture: every engine's column or its reason, the floor."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_prints_one_table_of_every_engine_asked_with_the_floor():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "generation.py"), "--arch", "tiny", "--engines",
         "hf,hf-static,fast,fast-int8,llama.cpp,nope", "--concurrency", "1,2", "--max-new-tokens", "4", "--no-append"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    names = next(line for line in out.splitlines() if line.startswith("| metric |")).strip("| ").split(" | ")[1:]

    def cells(metric: str) -> dict[str, str]:
        return dict(zip(names, re.search(rf"\| {re.escape(metric)} \| (.*) \|", out)[1].split(" | ")))

    floor = float(re.search(r"= ([\d.e+]+) tok/s for one request", out)[1])
    rates, fractions = cells("decode tok/s @1"), cells("decode @1 / floor")
    for engine in ("hf", "hf-static", "fast", "fast-int8"):
        rate = float(rates[engine])
        assert rate > 0 and float(cells("tok/s @2")[engine]) > 0
        assert abs(float(fractions[engine]) - rate / floor) < 0.01
    assert "- nope: unknown engine" in out
    assert "- llama.cpp" in out  # its column, or the reason it cannot run here


def test_weight_bytes_counts_the_language_model_and_head_once_and_no_embedding_table():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import generation
    import torch

    model, _ = generation.build("tiny", "cpu", torch.float32)
    decoder = sum(p.numel() for p in model.get_decoder().parameters())
    table = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    tied = head is model.get_input_embeddings().weight
    assert generation.weight_bytes(model) == 4 * (decoder - table + head.numel()) if not tied else \
        generation.weight_bytes(model) == 4 * decoder


def test_cpu_matmul_times_every_kind_of_linear_layer_at_each_row_count():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cpu_matmul.py"), "--layers", "1", "--rows", "1,8", "--repeats", "1"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("7 Linear layers (15 M weights)")
    rows = [line.strip("| ").split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    body = rows[1:]  # under the header
    assert {row[0] for row in body} >= {"nn.Linear fp32"} and {row[1] for row in body} == {"1", "8"}
    for name, count, ms, bandwidth, rate in body:
        assert float(ms) > 0 and float(bandwidth) > 0
        assert abs(float(rate) - 2 * int(count) * 15.0e6 / (float(ms) / 1000) / 1e9) <= 0.1 * float(rate) + 1
