"""The dataset manifest: one JSON line per image, the same fields for every source.

A manifest is what adapters produce (`cxrlm data build`) and what evaluation and the instruction
builder read. Field meanings are in docs/DATA.md; cxrlm/schema/manifest.json is the checked contract.
This module reads, writes and validates manifests; it does not know any dataset's layout.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from cxrlm.errors import InputError
from cxrlm.pathologies import CHEXPERT14

SPLITS = ("train", "val", "test")


def empty_labels() -> dict[str, int | None]:
    """All 14 CheXpert labels, unknown (null)."""
    return {name: None for name in CHEXPERT14}


def normal_labels() -> dict[str, int | None]:
    """What "No Finding" implies in CheXpert: every pathology absent; devices are not pathology, so unknown."""
    labels = {name: 0 for name in CHEXPERT14}
    labels["No Finding"] = 1
    labels["Support Devices"] = None
    return labels


def label_value(value: Any) -> int | None:
    """Coerce 1/0/-1 given as int, float or text ("1.0", "-1", "") to int; blank or NaN -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    number = float(value)
    if math.isnan(number):
        return None
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {value!r} is not 1, 0 or -1")
    return int(number)


def make_box(label: str, xyxy, kind: str = "finding", **optional) -> dict[str, Any]:
    """A manifest box: pixels of the stored image (x1, y1, x2, y2), origin top-left, rounded to 0.1 px.

    Optional keys: `chexpert` (the CheXpert label it is evidence for), `phrase` (report text it
    grounds), `readers` (how many readers drew it, after fusion). None values are dropped.
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    box = {"label": label, "xyxy": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)], "kind": kind}
    box.update({k: v for k, v in optional.items() if v is not None})
    return box


@dataclass
class ManifestRecord:
    """One image (or, for text-only sources, one report) and everything known about it."""

    dataset: str
    study_id: str
    patient_id: str
    image: str | None = None  # relative to `root`, or absolute; None for text-only records
    root: str | None = None
    view_position: str | None = None
    split: str | None = None  # filled by `cxrlm data build`, by patient
    labels: dict[str, int | None] = field(default_factory=empty_labels)
    source_labels: dict[str, Any] = field(default_factory=dict)
    boxes: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, str | None] | None = None
    report_is_synthetic: bool = False
    width: int | None = None
    height: int | None = None
    license: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_path(self) -> Path | None:
        """Where the image is on disk: `image` joined to `root` unless it is absolute."""
        if self.image is None:
            return None
        path = Path(self.image)
        if path.is_absolute() or self.root is None:
            return path
        return Path(self.root) / path

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the stored image, the frame of every box."""
        if self.width is None or self.height is None:
            return None
        return self.width, self.height

    def positives(self, uncertain_positive: bool = True) -> list[str]:
        """CheXpert labels marked present (and uncertain ones, if asked), in CHEXPERT14 order."""
        wanted = (1, -1) if uncertain_positive else (1,)
        return [name for name in CHEXPERT14 if self.labels.get(name) in wanted]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestRecord:
        labels = empty_labels()
        labels.update(data.get("labels") or {})
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "labels"}
        return cls(labels=labels, **fields)


@dataclass
class ManifestStats:
    """Running counts over records: per split records and patients, boxes, reports, label values."""

    splits: Counter = field(default_factory=Counter)
    patients: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    boxes: int = 0
    boxed_images: int = 0
    reports: int = 0
    labels: dict[str, Counter] = field(default_factory=lambda: {name: Counter() for name in CHEXPERT14})

    def add(self, record: ManifestRecord) -> None:
        self.splits[record.split] += 1
        self.patients[record.split].add(record.patient_id)
        self.boxes += len(record.boxes)
        self.boxed_images += bool(record.boxes)
        self.reports += record.report is not None
        for name in CHEXPERT14:
            self.labels[name][record.labels.get(name)] += 1

    def counted(self, records: Iterable[ManifestRecord]) -> Iterator[ManifestRecord]:
        """Pass records through, counting each."""
        for record in records:
            self.add(record)
            yield record

    def lines(self) -> list[str]:
        """The printed summary: split table, boxes and reports, then each label's values and prevalence."""
        out = ["split   records  patients"]
        out += [f"{s:<7} {self.splits.get(s, 0):>7}  {len(self.patients.get(s, ())):>8}" for s in SPLITS]
        out.append(f"boxes: {self.boxes} on {self.boxed_images} images; reports: {self.reports}")
        out.append(f"{'label':<27} {'pos':>6} {'neg':>6} {'uncert':>6} {'unknown':>7} {'prevalence':>10}")
        for name, values in self.labels.items():
            known = values[1] + values[0] + values[-1]
            prevalence = f"{values[1] / known:.3f}" if known else "-"
            out.append(f"{name:<27} {values[1]:>6} {values[0]:>6} {values[-1]:>6} {values[None]:>7} {prevalence:>10}")
        return out


def write_manifest(records: Iterable[ManifestRecord], path: str | Path) -> int:
    """Write records as JSON lines; returns how many were written.

    Written to a temporary file renamed at the end, so a build that fails halfway leaves no half manifest.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(record.to_json() + "\n")
                count += 1
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return count


def iter_manifest_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, parsed object) for every non-blank line; bad JSON -> InputError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist; build one with `cxrlm data build`")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path} line {number}: not valid JSON ({err.msg}); fix or rebuild the manifest")
            if not isinstance(data, dict):
                raise InputError(f"{path} line {number}: expected a JSON object, got {type(data).__name__}")
            yield number, data


def read_manifest(path: str | Path, root: str | Path | None = None) -> list[ManifestRecord]:
    """Read a manifest. `root` overrides every record's root (the data moved since the build).

    A record's relative root is taken relative to the manifest's folder.
    """
    path = Path(path)
    records = []
    for number, data in iter_manifest_lines(path):
        try:
            record = ManifestRecord.from_dict(data)
        except TypeError as err:
            raise InputError(f"{path} line {number}: not a manifest record ({err}); run `cxrlm data validate`")
        if root is not None:
            record.root = str(root)
        elif record.root is not None and not Path(record.root).is_absolute():
            record.root = str((path.parent / record.root).resolve())
        records.append(record)
    return records


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    return json.loads(resources.files("cxrlm").joinpath("schema/manifest.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _compiled_validator():
    # fastjsonschema compiles the schema to Python: ~50x faster than jsonschema, which matters for
    # MIMIC-size manifests (hundreds of thousands of lines).
    import fastjsonschema

    return fastjsonschema.compile(manifest_schema())


def validate_manifest(path: str | Path, check_images: bool = False) -> int:
    """Check every line against cxrlm/schema/manifest.json (and, if asked, that images exist).

    Returns the number of records; the first problem raises InputError naming the line.
    """
    from fastjsonschema import JsonSchemaValueException

    validate = _compiled_validator()
    path = Path(path)
    count = 0
    for number, data in iter_manifest_lines(path):
        try:
            validate(data)
        except JsonSchemaValueException as err:
            where = ".".join(str(p) for p in err.path[1:]) or "record"
            raise InputError(f"{path} line {number}: {where}: {err.message.removeprefix(err.name).strip()}")
        _check_boxes_inside(path, number, data)
        if check_images:
            _check_image(path, number, data)
        count += 1
    if count == 0:
        raise InputError(f"{path} has no records; rebuild it with `cxrlm data build`")
    return count


def _check_boxes_inside(path: Path, number: int, data: dict[str, Any]) -> None:
    """Boxes must lie in the stored image (1 px slack for annotators' rounding)."""
    width, height = data.get("width"), data.get("height")
    if width is None or height is None:
        return
    for box in data.get("boxes", []):
        x1, y1, x2, y2 = box["xyxy"]
        if x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1:
            raise InputError(
                f"{path} line {number}: box {box['label']!r} {box['xyxy']} lies outside the "
                f"{width}x{height} image; boxes must be pixels of the stored image"
            )


def _check_image(path: Path, number: int, data: dict[str, Any]) -> None:
    record = ManifestRecord.from_dict(data)
    if record.root is not None and not Path(record.root).is_absolute():
        record.root = str(path.parent / record.root)
    image = record.image_path
    if image is not None and not image.is_file():
        raise InputError(f"{path} line {number}: image {image} does not exist; pass the data's root")
