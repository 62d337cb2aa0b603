"""Small helpers the dataset adapters share: reading CSV/JSON with clear errors, image sizes, views.

Only what two or more adapters need lives here; anything dataset-specific stays in its adapter.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import warnings
from pathlib import Path
from typing import Any

from cxrlm.errors import InputError

# Spellings of view positions in the sources -> cxrlm's VIEW_POSITIONS. Unknown ("?", "") -> None.
VIEW_ALIASES = {
    "PA": "PA",
    "POSTEROANTERIOR": "PA",
    "AP": "AP",
    "AP SUPINE": "AP",
    "AP ERECT": "AP",
    "AP AXIAL": "AP",
    "ANTEROPOSTERIOR": "AP",
    "LL": "LL",
    "LEFT LATERAL": "LL",
    "RL": "RL",
    "RIGHT LATERAL": "RL",
    "L": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
}


class MissingImageWarning(UserWarning):
    """An annotation row whose image file is not under the root (a partial download): the row is skipped."""


def require_file(root: Path, name: str, hint: str = "") -> Path:
    path = root / name
    if not path.is_file():
        raise InputError(f"{path} not found; is --root the dataset's top folder?{' ' + hint if hint else ''}")
    return path


def find_file(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    """The first file under root matching one of the glob patterns (newest name first)."""
    for pattern in patterns:
        found = sorted(root.glob(pattern), reverse=True)
        if found:
            return found[0]
    raise InputError(f"no {what} ({', '.join(patterns)}) under {root}; is --root the dataset's top folder?")


def read_csv(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows of a CSV (or .csv.gz, as PhysioNet ships them) as dicts of strings; a missing column -> InputError."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [name for name in required if name not in columns]
        if missing:
            raise InputError(f"{path} lacks column(s) {', '.join(missing)}; is it the published file?")
        return list(reader)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})")


def number(text: Any) -> float | None:
    """A float from CSV text; blank, 'nan' or unparseable -> None."""
    if text is None:
        return None
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return None if math.isnan(value) else value


def text(value: Any) -> str | None:
    """Stripped text, or None when blank."""
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def view_position(value: str | None) -> str | None:
    if not value:
        return None
    return VIEW_ALIASES.get(" ".join(value.upper().replace("_", " ").split()))


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) read from the file header only (PIL, or pydicom for DICOM); None if missing."""
    if not path.is_file():
        return None
    if path.suffix.lower() in (".dcm", ".dicom"):
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(header.Columns), int(header.Rows)
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def existing_image(root: Path, relative: str, *alternatives: str) -> tuple[str, tuple[int, int]] | None:
    """The first of `relative`, *alternatives that exists under root, with its size.

    None, with a MissingImageWarning, when none does (a partial download): the caller skips the row.
    """
    for candidate in (relative, *alternatives):
        size = image_size(root / candidate)
        if size is not None:
            return candidate, size
    warnings.warn(f"{root / relative}", MissingImageWarning, stacklevel=2)
    return None


def scale_xyxy(xyxy, from_size: tuple[float, float], to_size: tuple[int, int]) -> list[float]:
    """Rescale a pixel box annotated on an image of `from_size` to the stored image of `to_size`."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]


def clip_xyxy(xyxy, size: tuple[int, int]) -> list[float]:
    """Clip a box to the image; annotation tools let corners fall a little outside."""
    width, height = size
    x1, y1, x2, y2 = xyxy
    return [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
