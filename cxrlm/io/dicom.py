"""Read one single-frame radiograph DICOM into display-ready 8-bit pixels, without touching patient data.

Pipeline: stored values (pydicom masks unused high bits and sign-extends signed data) -> modality LUT
(Rescale Slope/Intercept or Modality LUT Sequence) -> VOI (VOI LUT Sequence, else Window Center/Width with
its VOILUTFunction, else a 0.5-99.5 percentile window) -> MONOCHROME1 inversion -> uint8.

Privacy by construction: only the tags in READ_TAGS are parsed at all, so patient names, IDs, dates and
institutions never reach memory, metadata, warnings or error messages. Only SAFE_METADATA_TAGS are copied out.

Not here: multi-frame series, CT/MR/US volumes, presentation states, or writing DICOM (see cxrlm.export).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid as uids
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder

from cxrlm.errors import InputError
from cxrlm.types import XrayImage

# Non-identifying acquisition facts copied into XrayImage.metadata (plus "voi_applied" and "windowing").
SAFE_METADATA_TAGS = (
    "Modality",
    "BitsStored",
    "PhotometricInterpretation",
    "TransferSyntaxUID",
    "SOPClassUID",
    "Rows",
    "Columns",
    "BodyPartExamined",  # the input gate (cxrlm.gate) refuses a non-chest body part
    "ImageType",  # ... and warns about derived/secondary images
)

# Everything the pipeline needs; nothing else in the file is parsed.
READ_TAGS = (
    "SOPClassUID", "Modality", "ViewPosition", "BodyPartExamined", "ImageType", "PixelSpacing", "ImagerPixelSpacing",
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "RescaleIntercept", "RescaleSlope", "RescaleType", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData",
)  # fmt: skip

# CR/DX are the standard radiography modalities; DR and RG are used by some vendors, OT by secondary captures.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT")

# pip packages that add a decoder to pydicom, per family of compressed transfer syntaxes.
DECODER_PACKAGES = (
    (uids.JPEGTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    (uids.JPEGLSTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg (or pyjpegls)"),
    (uids.JPEG2000TransferSyntaxes, "pylibjpeg pylibjpeg-openjpeg"),
    ([uids.HTJ2K, uids.HTJ2KLossless, uids.HTJ2KLosslessRPCL], "pylibjpeg pylibjpeg-openjpeg"),
    (uids.RLETransferSyntaxes, "pylibjpeg pylibjpeg-rle"),
)

PERCENTILE_WINDOW = (0.5, 99.5)
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def read_dicom(path: Path, *, max_pixels: int, has_preamble: bool = True) -> XrayImage:
    """Read, validate and window one DICOM file. `has_preamble=False` tries a preamble-less dataset."""
    name = path.name
    ds = _open(path, name, has_preamble)
    _check_header(ds, name, max_pixels)
    stored = _decode(ds, name)
    pixels, windowing, notes = to_display(stored, ds)
    spacing, spacing_notes = _pixel_spacing(ds)
    notes = notes + spacing_notes
    if not ds.get("Modality"):
        notes.insert(0, "DICOM has no Modality: assuming a radiograph")
    metadata = _metadata(ds, windowing)
    if stored.ndim == 3:  # a colour DICOM (a secondary capture): the input gate reads its saturation
        from cxrlm.gate.features import colour_saturation

        top = 2 ** int(ds.get("BitsStored", 8)) - 1  # colour_saturation reads 0-255 values
        metadata["colour_saturation"] = round(colour_saturation(stored * (255.0 / top)), 4)
    return XrayImage(
        pixels=pixels,
        source=name,
        view_position=str(ds.get("ViewPosition") or "").strip().upper() or None,
        pixel_spacing=spacing,
        metadata=metadata,
        warnings=notes,
    )


def _open(path: Path, name: str, has_preamble: bool) -> pydicom.Dataset:
    try:
        with warnings.catch_warnings():  # pydicom's warnings about malformed values may quote those values
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=not has_preamble, specific_tags=list(READ_TAGS))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, OverflowError) as exc:
        raise _unreadable(name, has_preamble) from exc
    if not any(k in ds for k in ("PixelData", "Rows", "SOPClassUID", "Modality")):  # parsed, but nothing of ours
        raise _unreadable(name, has_preamble)
    _fill_transfer_syntax(ds)
    return ds


def _unreadable(name: str, has_preamble: bool) -> InputError:
    if has_preamble:
        return InputError(f"{name}: DICOM header is corrupt or truncated: re-export the file")
    return InputError(f"{name} is not a PNG, JPEG, TIFF or DICOM file: check the file")


def _fill_transfer_syntax(ds: pydicom.Dataset) -> None:
    """A preamble-less dataset has no file meta; its encoding was detected while reading."""
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = uids.ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian if little else uids.ExplicitVRBigEndian


def _check_header(ds: pydicom.Dataset, name: str, max_pixels: int) -> None:
    """Everything that can be refused before the (possibly huge or compressed) pixel data is decoded."""
    _check_content(ds, name)
    _check_size(ds, name, max_pixels)
    _check_decoder(ds, name)


def _check_content(ds: pydicom.Dataset, name: str) -> None:
    modality = str(ds.get("Modality") or "").strip().upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        from cxrlm.gate import modality_phrase

        raise InputError(
            f"{name}: Modality is {modality}, not a radiograph ({modality_phrase(modality)}): cxrlm reads chest "
            f"X-rays ({', '.join(RADIOGRAPH_MODALITIES)})"
        )
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise InputError(f"{name}: float pixel data is not supported: export the image as integer DICOM or PNG")
    if "PixelData" not in ds:
        raise InputError(f"{name}: DICOM has no pixel data: export the image itself (e.g. as DX/CR or PNG)")
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    if photometric == "PALETTE COLOR":
        raise InputError(f"{name}: PALETTE COLOR DICOM is not supported: export it as grayscale")


def _check_size(ds: pydicom.Dataset, name: str, max_pixels: int) -> None:
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise InputError(f"{name}: DICOM has {frames} frames: extract one frame into its own file and load that")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or columns <= 0:
        raise InputError(f"{name}: DICOM has no valid Rows/Columns: re-export the file")
    if rows * columns > max_pixels:
        raise InputError(
            f"{name}: {columns}x{rows} = {rows * columns:,} pixels exceeds max_pixels={max_pixels:,}: "
            "downscale the image or raise max_pixels"
        )


def _check_decoder(ds: pydicom.Dataset, name: str) -> None:
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise InputError(
            f"{name}: transfer syntax {syntax.name} is not supported: re-export as uncompressed DICOM"
        ) from exc
    if not decoder.is_available:
        package = next((pkg for group, pkg in DECODER_PACKAGES if syntax in group), "a pydicom decoder plugin")
        raise InputError(f"{name}: {syntax.name} needs a decoder plugin: pip install {package}")


def _decode(ds: pydicom.Dataset, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # pydicom warns about benign mismatches (e.g. J2K precision vs BitsStored) that it corrects itself.
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:  # any decoder failure means a broken file, from the user's point of view
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(
            f"{name}: DICOM pixel data is truncated or corrupt ({reason}): re-export or re-download the file"
        ) from exc


def to_display(stored: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, str, list[str]]:
    """Stored values -> uint8 for display. Returns (pixels, windowing used, warnings)."""
    if stored.ndim == 3:  # RGB / YBR (pydicom converts YBR to RGB): no modality/VOI for color images
        return _color_to_gray(stored, ds), "none", ["color DICOM converted to grayscale"]
    values = apply_modality_lut(stored, ds).astype(np.float64)
    fraction, windowing, notes = _voi(values, ds)
    pixels = np.rint(fraction * 255.0).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        pixels = 255 - pixels  # MONOCHROME1: the minimum value is white
    return pixels, windowing, notes


def _color_to_gray(rgb: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
    luma = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's "L"
    return np.rint(np.clip(luma / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def _voi(values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, str, list[str]]:
    """Pick the VOI transform: a VOI LUT Sequence first (as pydicom does), then the window, then percentiles."""
    notes: list[str] = []
    if ds.get("VOILUTSequence"):
        fraction = voi_lut(values, ds.VOILUTSequence[0])
        if fraction is not None:
            return fraction, "voi_lut", notes
        notes.append("VOI LUT is flat: using percentile windowing")
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None:
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        if function not in WINDOW_FUNCTIONS:
            notes.append(f"unknown VOILUTFunction {function}: using LINEAR")
            function = "LINEAR"
        if _window_is_valid(width, function):
            return window(values, center, width, function), "window", notes
        notes.append(f"WindowWidth {width:g} is invalid for {function}: using percentile windowing")
    return percentile_window(values, notes), "percentile", notes


def _first(value) -> float | None:
    """Window Center/Width may hold several alternatives; the first is the default one."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _window_is_valid(width: float, function: str) -> bool:
    return width >= 1 if function == "LINEAR" else width > 0


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI window per DICOM PS3.3 C.11.2.1.2-3, as a 0..1 fraction of the output range."""
    values = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        with np.errstate(over="ignore"):  # exp overflow far below the window is exactly 0
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width == 1:  # LINEAR with width 1 is a threshold at center - 0.5
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def voi_lut(values: np.ndarray, item: pydicom.Dataset) -> np.ndarray | None:
    """Apply one VOI LUT Sequence item; scaled by the LUT's own range, since LUT Descriptor bit depths are
    often wrong in the wild (e.g. 16 declared, 12 used). None if the LUT is flat."""
    entries, first_mapped, _bits = (int(v) for v in item.LUTDescriptor)
    data = _lut_data(item, entries or 65536)
    index = np.clip(np.rint(values) - first_mapped, 0, len(data) - 1).astype(np.intp)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return None
    return (data[index] - low) / (high - low)


def _lut_data(item: pydicom.Dataset, entries: int) -> np.ndarray:
    raw = item.LUTData
    if isinstance(raw, bytes):  # OW: always little endian in the transfer syntaxes cxrlm decodes
        return np.frombuffer(raw, dtype="<u2")[:entries].astype(np.float64)
    return np.atleast_1d(np.asarray(raw, dtype=np.float64))[:entries]


def percentile_window(values: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Linear window between the 0.5th and 99.5th percentiles: robust to collimator edges and burned-in text."""
    low, high = np.percentile(values, PERCENTILE_WINDOW)
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        if notes is not None:
            notes.append("image has a single gray level")
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[tuple[float, float] | None, list[str]]:
    """(row, column) mm from PixelSpacing, else ImagerPixelSpacing; zero or malformed values are dropped."""
    notes = []
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            notes.append(f"{keyword} is malformed: ignored")
            continue
        if row > 0 and column > 0 and math.isfinite(row) and math.isfinite(column):
            return (row, column), notes
        notes.append(f"{keyword} is not positive: ignored")
    return None, notes


def _metadata(ds: pydicom.Dataset, windowing: str) -> dict:
    """Only SAFE_METADATA_TAGS, as plain JSON-able values."""
    out: dict = {}
    for keyword in SAFE_METADATA_TAGS:
        value = ds.file_meta.get(keyword) if keyword == "TransferSyntaxUID" else ds.get(keyword)
        if isinstance(value, pydicom.multival.MultiValue):  # ImageType: ORIGINAL\\PRIMARY\\...
            value = "\\".join(str(v) for v in value)
        if value is not None and value != "":
            out[keyword] = int(value) if isinstance(value, int) else str(value)
    out["windowing"] = windowing
    out["voi_applied"] = windowing in ("window", "voi_lut")
    return out
