"""`cxrlm models`: list the default, $CXRLM_MODEL and $CXRLM_MODELS checkpoints and the profiles; `cxrlm models tiny DIR`: build a random test checkpoint."""

import argparse
from pathlib import Path

TINY_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision", "gemma3")


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list models; build a tiny random test checkpoint")
    sub = parser.add_subparsers(dest="models_verb")
    parser.set_defaults(run=list_models)
    tiny = sub.add_parser("tiny", help="write a tiny random-weight checkpoint of a family (for tests and demos)")
    tiny.add_argument("out", help="folder to create")
    tiny.add_argument("--seed", type=int, default=0)
    # The families with a tiny builder, as listed in cxrlm.models.families (kept literal: --help imports nothing).
    tiny.add_argument("--family", default="qwen2_5_vl", choices=TINY_FAMILIES, help="model family")
    tiny.set_defaults(run=build_tiny)


def list_models(args: argparse.Namespace) -> int:
    import os

    from cxrlm.models import DEFAULT_MODEL_DIR
    from cxrlm.models.profiles import PROFILES

    print(f"default: {_describe(DEFAULT_MODEL_DIR)}")
    if os.environ.get("CXRLM_MODEL"):
        print(f"$CXRLM_MODEL (used when --model is not given): {_describe(Path(os.environ['CXRLM_MODEL']))}")
    local = [d for root in filter(None, os.environ.get("CXRLM_MODELS", "").split(os.pathsep))
             for d in _checkpoints(Path(root))]
    if local:
        print("local checkpoints ($CXRLM_MODELS):")
        for folder in local:
            print(f"  {_describe(folder)}")
    print("profiles (matched by config.json model_type, or named in the folder's cxrlm.json; family = "
          "cxrlm.models.families key):")
    for p in PROFILES.values():
        print(f"  {p.name:<16} family={p.family} model_type={','.join(p.model_types)} dialect={p.dialect} "
              f"boxes={p.box_format}")
    return 0


def _checkpoints(root: Path) -> list[Path]:
    """`root` itself if it is a checkpoint folder, else its sub-folders that are."""
    if (root / "config.json").is_file():
        return [root]
    return sorted(d for d in root.glob("*") if (d / "config.json").is_file()) if root.is_dir() else []


def _describe(folder: Path) -> str:
    from cxrlm.errors import CxrlmError
    from cxrlm.models.profiles import resolve_profile

    if not (folder / "config.json").is_file():
        return f"{folder} (not installed)"
    try:
        profile = resolve_profile(folder).name
    except CxrlmError as err:
        profile = f"unusable: {err}"
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6
    return f"{folder} (profile {profile}, {size:.0f} MB of weights)"


def build_tiny(args: argparse.Namespace) -> int:
    from cxrlm.errors import ConfigError
    from cxrlm.models.families import FAMILIES

    out = Path(args.out)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        print(f"{out} already holds a checkpoint: kept")
        return 0
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty: choose a new folder")
    FAMILIES[args.family].build_tiny(out, seed=args.seed)
    # Random weights never say "stop": cap answers so a demo run takes seconds, not the profile's 2,048 tokens.
    (out / "cxrlm.json").write_text('{"max_new_tokens": 48}\n')
    print(f"wrote a random-weight {args.family} test checkpoint to {out} (its answers are meaningless)")
    return 0
