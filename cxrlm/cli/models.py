"""`cxrlm models`: list the default and known checkpoints; `cxrlm models tiny DIR`: build a random test checkpoint."""

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list models; build a tiny random test checkpoint")
    sub = parser.add_subparsers(dest="models_verb")
    parser.set_defaults(run=list_models)
    tiny = sub.add_parser("tiny", help="write a tiny random-weight Qwen2.5-VL checkpoint (for tests and demos)")
    tiny.add_argument("out", help="folder to create")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--family", default="qwen2_5_vl",
                      choices=("qwen2_5_vl", "llava_onevision", "gemma3", "qwen3_vl"), help="model family")
    tiny.set_defaults(run=build_tiny)


def list_models(args: argparse.Namespace) -> int:
    import os

    from cxrlm.models import DEFAULT_MODEL_DIR
    from cxrlm.models.profiles import PROFILES

    shipped = (DEFAULT_MODEL_DIR / "config.json").is_file()
    print(f"default: {DEFAULT_MODEL_DIR} ({'installed' if shipped else 'not installed'})")
    if os.environ.get("CXRLM_MODEL"):
        print(f"$CXRLM_MODEL: {os.environ['CXRLM_MODEL']} (used when --model is not given)")
    print("profiles (matched by config.json model_type, or named in the folder's cxrlm.json):")
    for p in PROFILES.values():
        print(f"  {p.name:<16} family={p.family} model_type={','.join(p.model_types)} dialect={p.dialect} "
              f"boxes={p.box_format}")
    return 0


def build_tiny(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrlm.errors import ConfigError
    from cxrlm.models.tiny import build_tiny_checkpoint
    from cxrlm.models.tiny_families import BUILDERS

    out = Path(args.out)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        print(f"{out} already holds a checkpoint: kept")
        return 0
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty: choose a new folder")
    build = BUILDERS.get(args.family, build_tiny_checkpoint)
    build(out, seed=args.seed)
    # Random weights never say "stop": cap answers so a demo run takes seconds, not the profile's 2,048 tokens.
    (out / "cxrlm.json").write_text('{"max_new_tokens": 48}\n')
    print(f"wrote a random-weight {args.family} test checkpoint to {out} (its answers are meaningless)")
    return 0
