"""The model options every verb that runs a model shares (--model, --device, --dtype, --engine, ...)."""

import argparse

from cxrlm.models import QUANTIZE


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint folder or server URL (default: $CXRLM_MODEL, else cxrlm-tiny)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
    parser.add_argument("--engine", choices=("hf", "fast", "remote", "vllm"), default="hf",
                        help="hf (plain transformers), fast (static KV cache, CUDA graphs), remote (--model is an "
                             "OpenAI-compatible server URL such as http://host:8000/v1; a URL picks it by itself), "
                             "or vllm (vLLM in-process; docs/ENGINES.md says how to install it)")
    parser.add_argument("--quantize", choices=QUANTIZE, default="none",
                        help="int8: int8 language-model weights on the CPU, for faster decoding (hf and fast engines; "
                             "docs/ENGINES.md gives the speed and the quality cost)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let a checkpoint of no built-in family run its own Python code (off by default)")
    parser.add_argument("--calibration", metavar="FILE|none",
                        help="classify probabilities' calibration file (`cxrlm calibrate`); 'none' for raw yes-token "
                             "likelihoods (default: the model folder's calibration.json, if any)")


def load_model_from_args(args: argparse.Namespace):
    from cxrlm.models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype,
                      trust_remote_code=args.trust_remote_code, engine=args.engine, calibration=args.calibration,
                      quantize=args.quantize)
