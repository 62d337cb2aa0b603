"""The language model's Linear layers alone on the CPU: PyTorch's nn.Linear, oneDNN-packed fp32 and int8, by rows.

    python benchmarks/cpu_matmul.py                    # Qwen2.5-0.5B's 168 decoder layers, 1 to 1,088 rows
    python benchmarks/cpu_matmul.py --layers 2 --rows 1,4 --repeats 1   # a smoke run

Decoding multiplies a few rows (one per running request) by every weight; prefilling multiplies many (one per prompt
token). This times one pass over the decoder's Linear layers (q, k, v, o, gate, up, down per layer; the output head
is left out) at each row count, as the engines run them: `nn.Linear` (the hf engine; MKL's sgemm on the PyPI
wheels), `PackedLinear` (the fast engine on a CPU, cxrlm.engines.packed) and `Int8Linear` (`--quantize int8`,
cxrlm.models.int8). It prints, per row count, the median milliseconds, the weight bytes read per second, and the
arithmetic rate (2 x rows x weights per second): the rates behind issue 36's CPU notes in benchmarks/RESULTS.md,
including the least time a burst of prompt tokens can take to prefill. Random weights; speed only.
"""

import argparse
import platform
import statistics
import time
import warnings

QWEN2_5_0_5B = {"hidden": 896, "intermediate": 4864, "layers": 24, "kv": 128}  # kv: 2 heads x 64


def layer_shapes(layers: int) -> list[tuple[int, int]]:
    """(out, in) of each decoder Linear layer, in the order a forward pass runs them."""
    h, i, kv = QWEN2_5_0_5B["hidden"], QWEN2_5_0_5B["intermediate"], QWEN2_5_0_5B["kv"]
    return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)] * layers


def kinds(shapes):
    """{name: layers} for each way the engines run them; built from the same random fp32 weights."""
    import torch

    from cxrlm.engines.packed import PackedLinear
    from cxrlm.models.int8 import Int8Linear

    torch.manual_seed(0)
    plain = [torch.nn.Linear(i, o) for o, i in shapes]
    found = {"nn.Linear fp32": plain}
    if torch.backends.mkldnn.is_available():
        found["oneDNN-packed fp32"] = [PackedLinear(layer) for layer in plain]
    if "fbgemm" in torch.backends.quantized.supported_engines:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found["int8 (fbgemm)"] = [Int8Linear(layer) for layer in plain]
    return found


def time_pass(layers, rows: int, repeats: int) -> float:
    """Median seconds of one pass over `layers` with `rows` input rows."""
    import torch

    inputs = {n: torch.randn(rows, n) for n in {layer.in_features for layer in layers}}
    times = []
    with torch.inference_mode():
        for layer in layers:  # warm-up: first-touch of outputs, oneDNN primitive caches
            layer(inputs[layer.in_features])
        for _ in range(repeats):
            start = time.perf_counter()
            for layer in layers:
                layer(inputs[layer.in_features])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from cxrlm.cli import quiet_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=QWEN2_5_0_5B["layers"])
    parser.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 34, 136, 512, 1088])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_threads()  # as the cxrlm command runs (before torch loads)
    import torch

    shapes = layer_shapes(args.layers)
    weights = sum(o * i for o, i in shapes)
    print(f"{len(shapes)} Linear layers ({weights / 1e6:.0f} M weights), {platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}\n")
    print("| layers | rows | ms | weight GB/s | GFLOPS |")
    print("|---|---:|---:|---:|---:|")
    for name, layers in kinds(shapes).items():
        element = 1 if name.startswith("int8") else 4
        for rows in args.rows:
            seconds = time_pass(layers, rows, args.repeats)
            print(f"| {name} | {rows} | {1000 * seconds:.1f} | {weights * element / seconds / 1e9:.1f} | "
                  f"{2 * rows * weights / seconds / 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main()
