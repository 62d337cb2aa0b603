"""`cxrlm data ...`: build and validate dataset manifests, list sources, build instruction datasets.

  cxrlm data sources
  cxrlm data build SOURCE --root DIR --out manifest.jsonl [--seed 0 --val-fraction 0.1 --test-fraction 0.1]
  cxrlm data validate manifest.jsonl [--check-images]
  cxrlm data instructions --manifest M.jsonl --out DIR [--tasks ... --mix ... --format sft|grpo ...]
"""

import argparse
import sys


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
    inst.add_argument("--box-format", choices=("qwen", "norm1", "int100"), default="qwen",
                      help="qwen: pixels of the stored image; norm1: 0-1 fractions; int100: 0-100 integers")
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

    from tqdm import tqdm

    from cxrlm.data.manifest import write_manifest
    from cxrlm.data.sources import build_records
    from cxrlm.data.sources.common import MissingImageWarning

    records = build_records(args.source, args.root, args.seed, args.val_fraction, args.test_fraction,
                            args.official_split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingImageWarning)
        # delay: no bar for builds that finish (or fail) within a second
        kept = list(tqdm(records, desc=args.source, unit=" records", file=sys.stderr, dynamic_ncols=True, delay=1))
    missing = [str(w.message) for w in caught if issubclass(w.category, MissingImageWarning)]
    if not kept:
        from cxrlm.errors import InputError

        raise InputError(f"no records under {args.root} for {args.source} ({len(missing)} rows lacked their image)")
    write_manifest(kept, args.out)
    print(f"wrote {len(kept)} records to {args.out}")
    if missing:
        print(f"skipped {len(missing)} rows whose image file is missing (first: {missing[0]})")
    print_summary(kept)
    return 0


def print_summary(records) -> None:
    from collections import Counter

    from cxrlm.pathologies import CHEXPERT14

    splits = Counter(r.split for r in records)
    patients = {split: len({r.patient_id for r in records if r.split == split}) for split in splits}
    print("split   records  patients")
    for split in ("train", "val", "test"):
        print(f"{split:<7} {splits.get(split, 0):>7}  {patients.get(split, 0):>8}")
    boxes = sum(len(r.boxes) for r in records)
    reports = sum(r.report is not None for r in records)
    print(f"boxes: {boxes} on {sum(bool(r.boxes) for r in records)} images; reports: {reports}")
    print(f"{'label':<27} {'pos':>6} {'neg':>6} {'uncert':>6} {'unknown':>7} {'prevalence':>10}")
    for name in CHEXPERT14:
        values = Counter(r.labels.get(name) for r in records)
        known = values[1] + values[0] + values[-1]
        prevalence = f"{values[1] / known:.3f}" if known else "-"
        print(f"{name:<27} {values[1]:>6} {values[0]:>6} {values[-1]:>6} {values[None]:>7} {prevalence:>10}")


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
