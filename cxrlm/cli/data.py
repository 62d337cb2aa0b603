"""`cxrlm data ...`: build and validate dataset manifests, list sources, build instruction datasets.

  cxrlm data sources
  cxrlm data build SOURCE --root DIR --out manifest.jsonl [--seed 0 --val-fraction 0.1 --test-fraction 0.1]
  cxrlm data validate manifest.jsonl [--check-images]
  cxrlm data instructions --manifest M.jsonl --out DIR [--tasks ... --mix ... --format sft|grpo ...]
"""

import argparse
import sys

from cxrlm.box_formats import FORMATS, NAMES


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="dataset manifests and instruction datasets")
    sub = parser.add_subparsers(dest="data_verb", metavar="SUBCOMMAND", required=True)

    sources = sub.add_parser("sources", help="list the dataset adapters, licenses and citations")
    sources.set_defaults(run=list_sources)

    build = sub.add_parser("build", help="read a dataset in its published layout into a manifest (JSONL)")
    build.add_argument("source", help="adapter name (see `cxrlm data sources`)")
    build.add_argument("--root", required=True, help="the dataset's top folder")
    build.add_argument("--out", required=True, help="manifest file to write (.jsonl)")
    build.add_argument("--seed", type=int, default=0, help="seed of the per-patient split hash")
    build.add_argument("--val-fraction", type=float, default=0.1)
    build.add_argument("--test-fraction", type=float, default=0.1)
    build.add_argument("--official-split", action="store_true",
                       help="keep the source's own split where it publishes one (MIMIC-CXR, CheXpert, ...)")
    build.set_defaults(run=build_manifest)

    check = sub.add_parser("validate", help="check a manifest against the schema")
    check.add_argument("manifest")
    check.add_argument("--check-images", action="store_true", help="also check that every image file exists")
    check.add_argument("--root", help="data root to use instead of the one recorded in the manifest")
    check.set_defaults(run=validate_manifest)

    inst = sub.add_parser("instructions", help="build SFT or GRPO instruction datasets from a manifest")
    inst.add_argument("--manifest", required=True, nargs="+", help="one or more manifests")
    inst.add_argument("--out", required=True, help="folder for train.jsonl, val.jsonl and info.json")
    inst.add_argument("--tasks", default="reason,report,classify,ground,vqa,conversation",
                      help="comma-separated tasks (default: all)")
    inst.add_argument("--mix", default="", help="task weights, e.g. reason=3,classify=2 (others keep defaults)")
    inst.add_argument("--format", choices=("sft", "grpo"), default="sft")
    inst.add_argument("--box-format", choices=NAMES, default="pixels", metavar="FORMAT",
                      help="how answers write boxes: " + "; ".join(f"{f.name} ({f.writer})" for f in FORMATS.values())
                      + "; qwen = pixels (default: pixels of the stored image)")
    inst.add_argument("--seed", type=int, default=0)
    inst.add_argument("--per-image", type=int, default=1, help="examples drawn per image")
    inst.add_argument("--uncertain", choices=("positive", "negative"), default="positive",
                      help="CheXpert -1 in answers: positive (U-Ones) or negative (U-Zeros)")
    inst.add_argument("--splits", default="train,val", help="manifest splits to write (default: train,val)")
    inst.add_argument("--root", help="data root to use instead of the one recorded in the manifest")
    inst.set_defaults(run=build_instructions)


def list_sources(args: argparse.Namespace) -> int:
    from cxrlm.data.sources import SOURCES

    for source in SOURCES.values():
        print(f"{source.name:<16} {source.description}")
        print(f"{'':<16} license: {source.license}")
        print(f"{'':<16} cite: {source.citation}")
    return 0


def build_manifest(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from tqdm import tqdm

    from cxrlm.data.manifest import ManifestStats, write_manifest
    from cxrlm.data.sources import build_records
    from cxrlm.data.sources.common import MissingImageWarning
    from cxrlm.errors import InputError

    records = build_records(args.source, args.root, args.seed, args.val_fraction, args.test_fraction,
                            args.official_split)
    stats = ManifestStats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingImageWarning)
        # Streamed: a MIMIC-size source never sits in memory. No bar for builds done within a second.
        bar = tqdm(stats.counted(records), desc=args.source, unit=" records", file=sys.stderr, delay=1)
        count = write_manifest(bar, args.out)
    missing = [str(w.message) for w in caught if issubclass(w.category, MissingImageWarning)]
    for w in caught:  # anything else was not ours to swallow
        if not issubclass(w.category, MissingImageWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if not count:
        Path(args.out).unlink()
        raise InputError(f"no records under {args.root} for {args.source} ({len(missing)} rows lacked their image)")
    print(f"wrote {count} records to {args.out}")
    if missing:
        print(f"skipped {len(missing)} rows whose image file is missing (first: {missing[0]})")
    print("\n".join(stats.lines()))
    return 0


def validate_manifest(args: argparse.Namespace) -> int:
    from cxrlm.data.manifest import read_manifest, validate_manifest

    count = validate_manifest(args.manifest, check_images=args.check_images and not args.root)
    if args.check_images and args.root:
        from cxrlm.errors import InputError

        for record in read_manifest(args.manifest, root=args.root):
            if record.image_path is not None and not record.image_path.is_file():
                raise InputError(f"image {record.image_path} does not exist; check --root")
    print(f"{args.manifest}: {count} records valid")
    return 0


def build_instructions(args: argparse.Namespace) -> int:
    from cxrlm.data.instructions import InstructionConfig, parse_mix, write_instructions
    from cxrlm.data.manifest import read_manifest

    config = InstructionConfig(
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        mix=parse_mix(args.mix),
        format=args.format,
        box_format=args.box_format,
        seed=args.seed,
        per_image=args.per_image,
        uncertain=args.uncertain,
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
    )
    records = [r for path in args.manifest for r in read_manifest(path, root=args.root)]
    stats = write_instructions(records, args.out, config)
    for split, tasks in stats.examples.items():
        total = sum(tasks.values())
        detail = ", ".join(f"{task}={n}" for task, n in sorted(tasks.items()))
        print(f"{split}: {total} examples ({detail}); synthetic: {stats.synthetic[split]}")
    for reason, n in stats.skipped.items():
        print(f"skipped {n} images: {reason}")
    print(f"wrote {', '.join(f'{s}.jsonl' for s in config.splits)} and info.json to {args.out}")
    return 0
