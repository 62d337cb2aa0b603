"""`cxrlm gate check IMAGE...`: what the input gate says about files; `cxrlm gate fit`: refit its parameters.

The gate itself (cxrlm.gate) runs inside every verb that reads images; see docs/GATE.md.
"""

import json
import os
import sys
from pathlib import Path

DEFAULT_DATA = "../shared/data"


def register(subparsers) -> None:
    parser = subparsers.add_parser("gate", help="the input gate: check images, or refit it on local data")
    verbs = parser.add_subparsers(dest="gate_verb", metavar="VERB", required=True)
    check = verbs.add_parser("check", help="is each file a chest radiograph, and which view? (no model loaded)")
    check.add_argument("images", nargs="+", metavar="IMAGE")
    check.set_defaults(run=run_check)
    fit = verbs.add_parser("fit", help="rebuild the training and held-out sets, fit the gate, write its parameters")
    fit.add_argument("--data", default=DEFAULT_DATA, help=f"the shared data folder (default: {DEFAULT_DATA})")
    fit.add_argument("--out", default=None, help="parameters file (default: the package's cxrlm/gate/gate.npz)")
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(run=run_fit)


def add_gate_option(parser) -> None:
    parser.add_argument("--gate", choices=("on", "warn", "off"), default=os.environ.get("CXRLM_GATE", "on"),
                        help="input gate: on refuses images that are not chest radiographs, warn only warns "
                             "(research), off skips it (default: $CXRLM_GATE, else on; docs/GATE.md)")


def run_check(args) -> int:
    """One JSON line per file; exit 2 when any file is refused."""
    from cxrlm.errors import InputError
    from cxrlm.gate import check_image, fill_views
    from cxrlm.io import load_image

    refused = 0
    for path in args.images:
        record = {"file": path}
        try:
            image = load_image(path)
            check_image(image, "on")
            fill_views([image])
            scores = {key: value for key, value in image.metadata.items() if key.startswith("gate_")}
            record.update(verdict="pass", view_position=image.view_position, **scores, warnings=image.warnings)
        except InputError as err:
            refused += 1
            record.update(verdict="refused", reason=str(err))
        print(json.dumps(record))
    return 2 if refused else 0


def run_fit(args) -> int:
    import importlib.util

    from cxrlm.errors import ConfigError, InputError
    from cxrlm.gate.fit import fit

    missing = [name for name in ("skimage", "sklearn", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"cxrlm gate fit needs {', '.join(missing)}: pip install 'cxrlm[gate]'")
    data = Path(args.data)
    if not (data / "nih14/labels.csv").exists():
        raise InputError(f"{data} has no nih14/labels.csv: point --data at the shared data folder (its README.md)")
    out = Path(args.out) if args.out else Path(__file__).parent.parent / "gate" / "gate.npz"
    card = fit(data, out, seed=args.seed, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(card["held_out_results"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0
