"""Load any chest X-ray file (PNG, JPEG, TIFF, BMP or DICOM) into an 8-bit grayscale XrayImage.

The format is chosen from the file's first bytes, not its extension. Ordinary images go through Pillow here;
DICOM goes to cxrlm.io.dicom (imported only when needed, as pydicom is heavy). Every problem a user can cause
raises InputError with one actionable line. Not here: resizing or normalizing for a model (see cxrlm.models).
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cxrlm.errors import InputError, library_warnings, quote
from cxrlm.types import FRONTAL_VIEWS, VIEW_POSITIONS, Study, XrayImage

# (leading bytes, format) of the raster formats handed to Pillow.
IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"BM", "BMP"),
)
DICOM_PREAMBLE = 128  # bytes before the "DICM" prefix of a DICOM Part 10 file
VIEW_ALIASES = {"LAT": "LATERAL"}  # a common non-standard spelling
LATERAL_VIEWS = tuple(v for v in VIEW_POSITIONS if v not in FRONTAL_VIEWS)
LATERAL_WARNING = "lateral view: most CXR models expect a frontal view"
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def load_image(path, *, max_pixels: int = 50_000_000, view_position: str | None = None) -> XrayImage:
    """Read one radiograph file; see the module docstring. `view_position` is used when the file has none."""
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    path = Path(path)
    requested = _normalize_view(view_position, path.name, strict=True)
    return _load(path, _read_head(path), max_pixels, requested)


def load_image_bytes(data: bytes, name: str, *, max_pixels: int = 50_000_000) -> XrayImage:
    """As load_image, for a file held in memory (a server upload): nothing is written to disk. `name` stands for
    the file in messages."""
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    if not data:
        raise InputError(f"{name} is empty (0 bytes): re-copy or re-export the file")
    return _load(_NamedBytes(data, name), data[: DICOM_PREAMBLE + 4], max_pixels, None)


class _NamedBytes(io.BytesIO):
    """A file in memory with a `name` for messages: pydicom and Pillow read it as they read a path."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name


def _load(path, head: bytes, max_pixels: int, requested: str | None) -> XrayImage:
    """Dispatch on the first bytes; `path` is a Path or a _NamedBytes."""
    if head[DICOM_PREAMBLE : DICOM_PREAMBLE + 4] == b"DICM":
        image = _read_dicom(path, max_pixels, has_preamble=True)
    elif any(head.startswith(magic) for magic, _ in IMAGE_MAGIC):
        image = _read_raster(path, max_pixels)
    elif _is_bare_dataset(head):  # DICOM written without preamble and "DICM" prefix (some old archives)
        image = _read_dicom(path, max_pixels, has_preamble=False)
    else:
        raise InputError(f"{path.name} is not a PNG, JPEG, TIFF or DICOM file: check the file")
    _resolve_view(image, requested)
    return image


def load_study(paths: list, *, view_positions=None) -> Study:
    """Load several views of one examination, e.g. PA + lateral. `view_positions` parallels `paths`."""
    if not paths:
        raise InputError("no image given for the study: pass at least one file")
    views = list(view_positions) if view_positions is not None else [None] * len(paths)
    if len(views) != len(paths):
        raise InputError(f"{len(views)} view positions given for {len(paths)} images: give one per image")
    images = [load_image(path, view_position=view) for path, view in zip(paths, views, strict=True)]
    drop_lateral_warning(images)
    return Study(images=images)


def assign_views(images: list[XrayImage], views: list[str]) -> None:
    """View positions given for images already loaded (the server's uploads), one per image in order, as
    `load_image(view_position=...)` takes them: the file's own ViewPosition wins, a disagreement is reported."""
    if len(views) != len(images):
        raise InputError(f"{len(views)} view positions given for {len(images)} image(s): give one per image")
    requested = [_normalize_view(view, "views", strict=True) for view in views]  # all checked before any is set
    for image, view in zip(images, requested, strict=True):
        _resolve_view(image, view)
        image.warnings = list(dict.fromkeys(image.warnings))  # an upload may already carry the lateral warning
    drop_lateral_warning(images)


def drop_lateral_warning(images: list[XrayImage]) -> None:
    if any(image.is_frontal for image in images):  # a frontal view is there: the lateral one is extra context
        for image in images:
            image.warnings = [w for w in image.warnings if w != LATERAL_WARNING]


def _read_head(path: Path) -> bytes:
    """The first bytes, after turning missing/empty/unreadable paths into one-line errors."""
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image: pass an image file (several views: load_study)")
    if not path.exists():
        raise InputError(f"no such file: {path}: check the path")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(DICOM_PREAMBLE + 4)
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}): check its permissions") from exc
    if size == 0:
        raise InputError(f"{path.name} is empty (0 bytes): re-copy or re-export the file")
    return head


def _is_bare_dataset(head: bytes) -> bool:
    """A bare little-endian dataset opens with an element of a low, even group: 0002 (file meta) to 0028."""
    group = int.from_bytes(head[:2], "little")
    return len(head) >= 8 and group % 2 == 0 and 0x0002 <= group <= 0x0028


def _read_dicom(path: Path, max_pixels: int, has_preamble: bool) -> XrayImage:
    from cxrlm.io.dicom import read_dicom

    return read_dicom(path, max_pixels=max_pixels, has_preamble=has_preamble)


@functools.cache
def _quiet_libtiff() -> None:
    """libtiff prints decoding errors straight to stderr from C (Pillow then raises OSError for them): switch off
    that default handler, once, in the libtiff Pillow loaded (found in /proc/self/maps; elsewhere left alone)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
        library = next(line.split()[-1] for line in maps if "/libtiff" in line)
        ctypes.CDLL(library).TIFFSetErrorHandler(None)
    except (OSError, StopIteration, AttributeError):
        pass


def _read_raster(path: Path, max_pixels: int) -> XrayImage:
    name = path.name
    library_notes: list[str] = []
    _quiet_libtiff()
    try:
        with library_warnings(library_notes, "Pillow"), Image.open(path) as im:
            _check_raster_header(im, name, max_pixels)
            im.load()
            metadata = {"format": im.format, "mode": im.mode}
            upright = ImageOps.exif_transpose(im)  # phone photos of films carry an EXIF rotation
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name}: image is too large to decode safely: downscale it") from exc
    except InputError:
        raise
    except Exception as exc:  # Pillow says "broken file" in many ways: OSError, SyntaxError, TypeError, struct.error
        reason = str(exc).splitlines()[0].replace(str(path), name) if str(exc) else type(exc).__name__
        raise InputError(
            f"{name}: image is truncated or corrupt ({quote(reason, 120)}): re-export or re-download it"
        ) from exc
    pixels, notes = to_gray8(upright, name)
    if notes and upright.mode not in HIGH_BIT_MODES:  # a colour file: the input gate (cxrlm.gate) reads how colourful
        metadata["colour_saturation"] = _saturation(upright)
    return XrayImage(pixels=pixels, source=name, metadata=metadata, warnings=notes + library_notes)


def _saturation(im: Image.Image) -> float:
    from cxrlm.gate.features import colour_saturation

    small = im.convert("RGB")
    small.thumbnail((256, 256))
    return round(colour_saturation(np.asarray(small)), 4)


def _check_raster_header(im: Image.Image, name: str, max_pixels: int) -> None:
    """Refuse decompression bombs and multi-page files from the header, before any pixel is decoded."""
    width, height = im.size
    if width * height > max_pixels:
        raise InputError(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds max_pixels={max_pixels:,}: "
            "downscale the image or raise max_pixels"
        )
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        raise InputError(f"{name}: file has {frames} frames/pages: save the radiograph as a single image")


def to_gray8(im: Image.Image, name: str = "image") -> tuple[np.ndarray, list[str]]:
    """Any Pillow mode -> (H, W) uint8. High bit depths are stretched over their actual range."""
    if im.mode in HIGH_BIT_MODES:
        values = np.asarray(im, dtype=np.float64)
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise InputError(f"{name}: {bad:,} pixel(s) are NaN or infinite: re-export the image with finite values")
        return _stretch(values)
    if im.mode in ("L", "1"):
        pixels = np.asarray(im.convert("L"), dtype=np.uint8)
        return pixels, ["image has a single gray level"] if pixels.min() == pixels.max() else []
    rgb = np.asarray(im.convert("RGB"))
    notes = []
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        notes.append("color image converted to grayscale")
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.uint8), notes


def _stretch(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """16-bit files often use only part of their range (e.g. 12-bit detectors): map min..max to 0..255."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8), ["image has a single gray level"]
    return np.rint((values - low) / (high - low) * 255.0).astype(np.uint8), []


def _normalize_view(view: str | None, name: str, strict: bool) -> str | None:
    """Upper-case a view position; unknown values are an error (user argument) or dropped (file tag)."""
    if view is None or not str(view).strip():
        return None
    value = str(view).strip().upper()
    value = VIEW_ALIASES.get(value, value)
    if value in VIEW_POSITIONS:
        return value
    if strict:
        raise InputError(f"{name}: unknown view position '{quote(view)}': use one of {', '.join(VIEW_POSITIONS)}")
    return None


def _resolve_view(image: XrayImage, requested: str | None) -> None:
    """The file's own ViewPosition wins over the argument; a disagreement is reported."""
    from_file = _normalize_view(image.view_position, image.source, strict=False)
    if image.view_position and from_file is None:
        image.warnings.append(f"ViewPosition '{quote(image.view_position)}' is not one of {', '.join(VIEW_POSITIONS)}")
    if from_file and requested and from_file != requested:
        image.warnings.append(f"file says view {from_file}, argument says {requested}: using {from_file}")
    image.view_position = from_file or requested
    if image.view_position in LATERAL_VIEWS:
        image.warnings.append(LATERAL_WARNING)
