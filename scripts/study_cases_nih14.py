"""A reader-study case folder from the NIH ChestX-ray14 images in ../shared/data (docs/STUDY.md).

    python scripts/study_cases_nih14.py --out ~/cxrlm-study/cases --cases 12 --seed 0

Picks half normal ("No Finding") and half abnormal images (a CheXpert-14 finding present), seeded; copies them to
OUT/img/ under neutral names (case-01.jpg ...: NIH file names carry patient numbers) and writes OUT/cases.csv with
CheXpert-14 reference labels mapped from the NIH labels. A finding NIH names the same way (Atelectasis, Cardiomegaly, Effusion, Pneumonia,
Pneumothorax, Consolidation, Edema) is 1 or 0; a CheXpert label NIH only gives evidence for (Lung Lesion from Mass or
Nodule, Lung Opacity from Infiltration, Pleural Other from Pleural_Thickening) is 1 when present, else blank; labels
with no NIH source (Enlarged Cardiomediastinum, Fracture, Support Devices) are blank. NIH labels are mined from
reports by NLP (about 90% accurate): a study for publication needs labels read by radiologists.
"""

import argparse
import csv
import random
import shutil
import sys
from pathlib import Path

from cxrlm.pathologies import CHEXPERT14, CHEXPERT_TO_NIH

EXACT = {"Atelectasis", "Cardiomegaly", "Pleural Effusion", "Pneumonia", "Pneumothorax", "Consolidation", "Edema"}


def reference(row: dict) -> dict[str, str]:
    """CheXpert-14 reference labels ('1', '0' or '') of one NIH labels.csv row."""
    out = {"No Finding": "1" if row["finding_labels"] == "No Finding" else "0"}
    for label in CHEXPERT14[1:]:
        present = any(row.get(nih) == "1" for nih in CHEXPERT_TO_NIH[label])
        out[label] = "1" if present else ("0" if label in EXACT else "")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True, help="the case folder to write (must not exist)")
    parser.add_argument("--cases", type=int, default=6, help="an even number, a multiple of the conditions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    labels = args.data / "nih14" / "labels.csv"
    if not labels.is_file():
        print(f"error: {labels} not found: give --data, the shared data folder", file=sys.stderr)
        return 2
    if args.cases < 2 or args.cases % 2 or args.out.exists():
        print("error: --cases must be even and at least 2, and --out a new folder", file=sys.stderr)
        return 2
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(args.seed)
    normal = [r for r in rows if r["finding_labels"] == "No Finding"]
    # abnormal: a finding CheXpert-14 can name (NIH's Emphysema, Fibrosis and Hernia alone are not)
    abnormal = [r for r in rows if "1" in list(reference(r).values())[1:]]
    chosen = rng.sample(normal, args.cases // 2) + rng.sample(abnormal, args.cases // 2)
    rng.shuffle(chosen)
    (args.out / "img").mkdir(parents=True)
    with (args.out / "cases.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case_id", "images", *CHEXPERT14])
        writer.writeheader()
        for i, row in enumerate(chosen, start=1):
            name = f"case-{i:02d}{Path(row['image']).suffix}"
            shutil.copyfile(args.data / "nih14" / row["image"], args.out / "img" / name)
            writer.writerow({"case_id": f"case-{i:02d}", "images": f"img/{name}", **reference(row)})
    print(f"{args.cases} cases in {args.out / 'cases.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
