"""`cxrlm eval heatmaps`: the model-randomization sanity test and the box-mass figure (cxrlm.eval.heatmaps), and
`--heatmap FILE.png` for `cxrlm classify` and `cxrlm ground` (the overlay written here)."""

import argparse
import sys
from pathlib import Path

from cxrlm.cli.model_options import add_model_options, load_model_from_args

MAX_IMAGES = 1000  # each image costs a classify and four gradient passes


def register_eval(verbs) -> None:
    parser = verbs.add_parser(
        "heatmaps", help="do heatmaps pass the model-randomization test, and favour the radiologists' boxes?",
        description="Model-randomization sanity test (Adebayo et al., 2018) on a folder of images, and the map's "
                    "mass inside radiologist boxes against a uniform map's (cxrlm.eval.heatmaps).")
    add_model_options(parser)
    parser.add_argument("--images", type=Path, help="folder of images for the randomization test")
    parser.add_argument("--boxes", type=Path, nargs="+",
                        help="box CSV(s): image,label,x1,y1,x2,y2 (pixels; image paths relative to the CSV's folder), "
                             "as NIH's boxes.csv and the COVID-19 collection's lung_boxes.csv; a CheXpert or NIH label "
                             "is explained by its classify map, any other label (a phrase) by its grounding answer's")
    parser.add_argument("--limit", type=int, default=50, help=f"images for the randomization test, and boxes per "
                                                               f"CSV (default 50, at most {MAX_IMAGES}; in order)")
    parser.add_argument("--method", default="gradient", help="gradient or gradxinput (cxrlm.heatmaps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and the bootstrap")
    parser.add_argument("--out", type=Path, help="also write the full result JSON here")
    parser.set_defaults(run=run_eval_heatmaps)


def run_eval_heatmaps(args: argparse.Namespace) -> int:
    import json

    from cxrlm.errors import ConfigError
    from cxrlm.eval import heatmaps as evaluation
    from cxrlm.heatmaps import METHODS
    from cxrlm.io import load_study

    if args.method not in METHODS:
        raise ConfigError(f"--method {args.method!r}: use one of {', '.join(METHODS)}")
    if not 1 <= args.limit <= MAX_IMAGES:
        raise ConfigError(f"--limit must be between 1 and {MAX_IMAGES}")
    if not (args.images or args.boxes):
        raise ConfigError("give --images (the randomization test), --boxes (the box mass), or both")
    paths = _image_paths(args.images, args.limit) if args.images else []
    items = [item for csv_path in args.boxes or [] for item in _box_items(csv_path, args.limit)]  # before the model
    model = load_model_from_args(args)
    result = {"model": model.name}
    if paths:
        result["randomization"] = evaluation.randomization_test(model, [load_study([p]) for p in paths],
                                                                args.method, args.seed)
    if items:
        result["box_mass"] = evaluation.box_mass(model, items, args.method, args.seed)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(_summary(result))
    return 0


def _image_paths(folder: Path, limit: int) -> list[Path]:
    from cxrlm.errors import InputError

    suffixes = {".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff"}
    paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in suffixes)[:limit] if folder.is_dir() else []
    if not paths:
        raise InputError(f"--images {folder}: no PNG, JPEG, TIFF or DICOM files in that folder")
    return paths


def _box_items(path: Path, limit: int) -> list:
    import csv

    from cxrlm.data.sources.nih14 import nih_box_label
    from cxrlm.errors import InputError
    from cxrlm.eval.heatmaps import BoxItem
    from cxrlm.io import load_study
    from cxrlm.types import Task

    try:
        rows = list(csv.DictReader(path.open(newline="")))
    except OSError as err:
        raise InputError(f"cannot read --boxes {path}: {err.strerror}") from None
    items = []
    for i, row in enumerate(rows[:limit], 2):
        try:
            xyxy = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            study = load_study([path.parent / row["image"]])
            label = row["label"].strip()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"--boxes {path} line {i}: needs image,label,x1,y1,x2,y2 (numbers)") from None
        try:
            items.append(BoxItem(study, nih_box_label(label), xyxy))
        except KeyError:  # not a finding: a phrase the model grounds
            items.append(BoxItem(study, label.lower(), xyxy, Task.GROUND))
    return items


def _summary(result: dict) -> str:
    def ci(d):
        return f"{d['mean']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]" if d["n"] else "n/a"

    lines = [f"model {result['model']}"]
    if "randomization" in result:
        test = result["randomization"]
        lines += [f"{test['images']} images, method {test['method']}: Spearman rank correlation with the trained "
                  "model's map (mean [95% CI]):"]
        lines += [f"  {name:<16} {ci(value)}" for name, value in test["spearman"].items()]
    if "box_mass" in result:
        mass = result["box_mass"]
        lines.append(f"method {mass['method']}: map mass inside {mass['overall']['boxes']} reader boxes "
                     f"({mass['overall']['no_box']} phrases got no box): {ci(mass['overall']['mass'])}; "
                     f"uniform map: {ci(mass['overall']['uniform'])}; "
                     f"difference {ci(mass['overall']['mass_minus_uniform'])}")
        lines += [f"  {label:<14} {v['boxes']} boxes: mass {v['mass']:.3f}, uniform {v['uniform']:.3f}"
                  for label, v in mass["per_finding"].items()]
    return "\n".join(lines)


# --- --heatmap on classify and ground


def add_heatmap_option(parser: argparse.ArgumentParser, label_option: bool) -> None:
    parser.add_argument("--heatmap", metavar="FILE.png", type=Path,
                        help="also write an overlay of which image regions moved the answer (hf engine)")
    if label_option:
        parser.add_argument("--heatmap-label", metavar="NAME",
                            help="the label whose probability the heatmap explains (default: the most probable)")


def write_heatmap(model, study, out, args) -> None:
    """Write --heatmap's overlay PNG (original-image size) for a classify or ground output."""
    from cxrlm import heatmaps
    from cxrlm.errors import InputError
    from cxrlm.types import Task

    if out.task == Task.CLASSIFY:
        subject = _heatmap_label(getattr(args, "heatmap_label", None), out.probabilities)
        answer = None
    else:
        if not out.boxes:
            raise InputError("--heatmap: the model gave no box to explain")
        subject, answer = args.phrase, out.raw_text
    heat = model.heatmap(study, out.task, subject, answer)
    try:
        args.heatmap.write_bytes(heatmaps.overlay_png(study.images[0].pixels, heat))
    except OSError as err:
        raise InputError(f"cannot write --heatmap {args.heatmap}: {err.strerror}") from None
    print(f"wrote heatmap of {subject!r} to {args.heatmap}", file=sys.stderr)


def check_heatmap_label(args, labels) -> None:
    """Before any model work: --heatmap-label names one of the labels to be scored, and comes with --heatmap."""
    from cxrlm.errors import ConfigError

    if args.heatmap_label and not args.heatmap:
        raise ConfigError("--heatmap-label needs --heatmap FILE.png")
    if args.heatmap_label:
        args.heatmap_label = _heatmap_label(args.heatmap_label, labels)


def _heatmap_label(name: str | None, probabilities) -> str:
    from cxrlm.errors import InputError
    from cxrlm.pathologies import canonical_name

    if not name:
        return max(probabilities, key=probabilities.get)
    try:
        name = canonical_name(name)
    except KeyError:
        name = None
    if name not in probabilities:
        raise InputError(f"--heatmap-label: choose one of the labels scored: {', '.join(probabilities)}")
    return name
