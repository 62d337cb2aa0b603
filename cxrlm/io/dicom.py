"""Read one single-frame radiograph DICOM into display-ready 8-bit pixels, without touching patient data.

Pipeline: stored values (pydicom masks unused high bits and sign-extends signed data) -> modality LUT
(Rescale Slope/Intercept or Modality LUT Sequence) -> VOI (VOI LUT Sequence, else Window Center/Width with
its VOILUTFunction, else a 0.5-99.5 percentile window) -> MONOCHROME1 inversion -> uint8.

Privacy by construction: only the tags in READ_TAGS are parsed at all, so patient names, IDs, dates and
institutions never reach memory, metadata, warnings or error messages. Only SAFE_METADATA_TAGS are copied out.

Every size is checked before the pixel data is decoded: Rows x Columns against max_pixels, the pixel data's
length against Rows x Columns x frames, and a compressed frame's own header against Rows/Columns (see
cxrlm.io.codestream). A malformed attribute, or a transform that leaves no usable image (non-finite or single-
valued after rescale), is an InputError; pydicom's warnings become the image's warnings, never stderr.

Not here: multi-frame series, CT/MR/US volumes, presentation states, or writing DICOM (see cxrlm.export).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid as uids
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder

from cxrlm.errors import InputError, library_warnings, quote
from cxrlm.io.codestream import frame_size
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
BITS_ALLOCATED = (1, 8, 16, 32, 64)
US_MAX = 65_535  # Rows and Columns are US: anything larger came from a malformed element
# A deflated dataset is inflated whole before any tag is read: at most this many bytes per allowed pixel.
INFLATED_BYTES_PER_PIXEL = 8


def read_dicom(path: Path, *, max_pixels: int, has_preamble: bool = True) -> XrayImage:
    """Read, validate and window one DICOM file. `has_preamble=False` tries a preamble-less dataset."""
    name = path.name
    library_notes: list[str] = []
    with library_warnings(library_notes, "pydicom"):
        ds = _open(path, name, has_preamble, max_pixels)
        _check_header(ds, name, max_pixels)
        stored = _decode(ds, name)
        pixels, windowing, notes = to_display(stored, ds, name)
    spacing, spacing_notes = _pixel_spacing(ds)
    notes = notes + spacing_notes + library_notes
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


def _open(path: Path, name: str, has_preamble: bool, max_pixels: int) -> pydicom.Dataset:
    try:
        with _binary(path) as handle:
            if has_preamble:
                _check_deflated_size(handle, name, max_pixels)
            handle.seek(0)
            ds = pydicom.dcmread(handle, force=not has_preamble, specific_tags=list(READ_TAGS))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, OverflowError, zlib.error) as exc:
        raise _unreadable(name, has_preamble) from exc
    if not any(k in ds for k in ("PixelData", "Rows", "SOPClassUID", "Modality")):  # parsed, but nothing of ours
        raise _unreadable(name, has_preamble)
    for keyword in READ_TAGS:  # convert every value now, so a malformed one fails here with its name
        try:
            ds.get(keyword)
        except Exception as exc:  # pydicom raises many kinds for bytes that do not fit the VR
            raise InputError(f"{name}: {keyword} is malformed: re-export the file") from exc
    _fill_transfer_syntax(ds)
    return ds


def _binary(path):
    """The file, open for reading: a path is opened, a file in memory (a server upload) is used as it is."""
    return contextlib.nullcontext(path) if hasattr(path, "read") else open(path, "rb")


def _check_deflated_size(handle, name: str, max_pixels: int) -> None:
    """pydicom inflates a Deflated Explicit VR dataset whole, and zlib reaches 1000:1: inflate a bounded amount."""
    handle.seek(0)
    pydicom.filereader.read_preamble(handle, False)
    meta = pydicom.filereader._read_file_meta_info(handle)  # read_file_meta_info itself takes only a path
    if meta.get("TransferSyntaxUID") != uids.DeflatedExplicitVRLittleEndian:
        return
    meta_length = meta.get("FileMetaInformationGroupLength")
    if not isinstance(meta_length, int):
        raise InputError(f"{name}: DICOM header is corrupt or truncated: re-export the file")
    limit = max_pixels * INFLATED_BYTES_PER_PIXEL + 2**20
    handle.seek(132 + 12 + meta_length)  # preamble and "DICM", the group length element, the rest of the meta
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    while chunk := handle.read(2**16):
        inflated += len(inflater.decompress(chunk, limit + 1 - inflated))
        if inflated > limit or inflater.unconsumed_tail:
            raise InputError(
                f"{name}: the deflated dataset inflates to more than {limit:,} bytes, beyond what "
                f"max_pixels={max_pixels:,} allows: re-export it uncompressed or raise max_pixels"
            )


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
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        _check_frame_header(ds, name)
    else:
        _check_pixel_data_length(ds, name)


def _check_content(ds: pydicom.Dataset, name: str) -> None:
    modality = str(ds.get("Modality") or "").strip().upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        from cxrlm.gate import modality_phrase

        raise InputError(
            f"{name}: Modality is {quote(modality)}, not a radiograph ({modality_phrase(modality)}): cxrlm reads "
            f"chest X-rays ({', '.join(RADIOGRAPH_MODALITIES)})"
        )
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise InputError(f"{name}: float pixel data is not supported: export the image as integer DICOM or PNG")
    if "PixelData" not in ds:
        raise InputError(f"{name}: DICOM has no pixel data: export the image itself (e.g. as DX/CR or PNG)")
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    if photometric == "PALETTE COLOR":
        raise InputError(f"{name}: PALETTE COLOR DICOM is not supported: export it as grayscale")


def _check_size(ds: pydicom.Dataset, name: str, max_pixels: int) -> None:
    frames = _integer(ds, "NumberOfFrames", name, default=1)
    if frames > 1:
        raise InputError(f"{name}: DICOM has {quote(frames)} frames: extract one frame into its own file and load that")
    if frames < 1:
        raise InputError(f"{name}: NumberOfFrames is {quote(frames)}: re-export the file")
    samples = _integer(ds, "SamplesPerPixel", name, default=1)
    if samples not in (1, 3):
        raise InputError(f"{name}: SamplesPerPixel is {quote(samples)}, not 1 (gray) or 3 (color): re-export the file")
    bits = _integer(ds, "BitsAllocated", name, default=0)
    if bits not in BITS_ALLOCATED:
        raise InputError(f"{name}: BitsAllocated is {quote(bits)}, not one of {BITS_ALLOCATED}: re-export the file")
    rows, columns = _integer(ds, "Rows", name, default=0), _integer(ds, "Columns", name, default=0)
    if not (0 < rows <= US_MAX and 0 < columns <= US_MAX):
        raise InputError(f"{name}: DICOM has no valid Rows/Columns: re-export the file")
    if rows * columns > max_pixels:
        raise InputError(
            f"{name}: {columns}x{rows} = {rows * columns:,} pixels exceeds max_pixels={max_pixels:,}: "
            "downscale the image or raise max_pixels"
        )


def _integer(ds: pydicom.Dataset, keyword: str, name: str, default: int) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: {keyword} is '{quote(value)}', not a whole number: re-export the file") from None


def _number(ds: pydicom.Dataset, keyword: str, name: str) -> float | None:
    """A finite decimal, None when absent; anything else (text, empty, NaN, infinity) is an InputError."""
    if keyword not in ds:
        return None
    value = ds.get(keyword)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        shown = "empty" if value is None or value == "" else f"'{quote(value)}', not a finite number"
        raise InputError(f"{name}: {keyword} is {shown}: fix or remove it")
    return number


def _check_pixel_data_length(ds: pydicom.Dataset, name: str) -> None:
    """Native pixel data holds exactly Rows x Columns x samples x frames values (plus an even-length pad byte):
    more means the header's size or frame count is wrong, and decoding it anyway misreads the image."""
    rows, columns, samples = int(ds.Rows), int(ds.Columns), _integer(ds, "SamplesPerPixel", name, 1)
    frame_bytes = math.ceil(rows * columns * samples * int(ds.BitsAllocated) / 8)
    actual = len(ds.PixelData)
    if actual < frame_bytes:
        raise InputError(
            f"{name}: DICOM pixel data is truncated or corrupt ({actual:,} bytes, {columns}x{rows} needs "
            f"{frame_bytes:,}): re-export or re-download the file"
        )
    if actual >= 2 * frame_bytes:
        raise InputError(
            f"{name}: pixel data holds {actual:,} bytes, {actual // frame_bytes} times what one {columns}x{rows} "
            "frame needs: Rows/Columns or NumberOfFrames are wrong; re-export the file"
        )


def _check_frame_header(ds: pydicom.Dataset, name: str) -> None:
    """The decoder allocates what the compressed frame's own header says, whatever Rows/Columns claim."""
    if ds.file_meta.TransferSyntaxUID in uids.RLETransferSyntaxes:
        return  # RLE carries no size: pydicom's RLE decoder allocates from Rows/Columns
    try:
        first = next(itertools.islice(generate_fragments(ds.PixelData), 1, None), b"")  # after the offset table
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name}: DICOM pixel data is truncated or corrupt (bad encapsulation): re-export it") from exc
    size = frame_size(first)
    if size is None:
        raise InputError(f"{name}: DICOM pixel data is truncated or corrupt (no frame header): re-export the file")
    rows, columns, components = size
    expected = (int(ds.Rows), int(ds.Columns), _integer(ds, "SamplesPerPixel", name, 1))
    if size != expected:
        raise InputError(
            f"{name}: DICOM pixel data is truncated or corrupt (the compressed image is {columns}x{rows} with "
            f"{components} component(s), the DICOM header says {expected[1]}x{expected[0]} with {expected[2]}): "
            "re-export the file"
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
        stored = ds.pixel_array
    except Exception as exc:  # any decoder failure means a broken file, from the user's point of view
        reason = quote((str(exc).strip().splitlines() or [type(exc).__name__])[0], 120)
        raise InputError(
            f"{name}: DICOM pixel data is truncated or corrupt ({reason}): re-export or re-download the file"
        ) from exc
    expected = (int(ds.Rows), int(ds.Columns)) + ((3,) if _integer(ds, "SamplesPerPixel", name, 1) == 3 else ())
    if stored.shape != expected:  # a last guard: the checks above should make this impossible
        raise InputError(f"{name}: decoded pixels are {stored.shape}, not {expected}: re-export the file")
    return stored


def to_display(stored: np.ndarray, ds: pydicom.Dataset, name: str = "DICOM") -> tuple[np.ndarray, str, list[str]]:
    """Stored values -> uint8 for display. Returns (pixels, windowing used, warnings)."""
    if stored.ndim == 3:  # RGB / YBR (pydicom converts YBR to RGB): no modality/VOI for color images
        return _color_to_gray(stored, ds), "none", ["color DICOM converted to grayscale"]
    values = _modality(stored, ds, name)
    fraction, windowing, notes = _voi(values, ds, name)
    pixels = np.rint(fraction * 255.0).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        pixels = 255 - pixels  # MONOCHROME1: the minimum value is white
    return pixels, windowing, notes


def _color_to_gray(rgb: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
    luma = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's "L"
    return np.rint(np.clip(luma / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def _modality(stored: np.ndarray, ds: pydicom.Dataset, name: str) -> np.ndarray:
    """Stored values -> modality values (float64), refusing transforms that leave no usable image."""
    if ds.get("ModalityLUTSequence"):
        _lut_item(ds.ModalityLUTSequence[0], "Modality LUT", name)
        try:
            values = apply_modality_lut(stored, ds).astype(np.float64)
        except Exception as exc:  # pydicom's LUT code raises many kinds for LUTs that do not fit the data
            raise InputError(f"{name}: the Modality LUT does not fit the pixel data: fix or remove it") from exc
        transform = "the Modality LUT"
    else:
        slope, intercept = _number(ds, "RescaleSlope", name), _number(ds, "RescaleIntercept", name)
        values = stored.astype(np.float64)
        if slope is not None and intercept is not None:  # as pydicom: a rescale needs both
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
                values = values * slope + intercept
        transform = "RescaleSlope/RescaleIntercept"
    if not np.isfinite(values).all():
        raise InputError(f"{name}: {transform} overflows the pixel values to infinity: fix or remove it")
    if _is_flat(values) and not _is_flat(stored):
        raise InputError(f"{name}: {transform} maps every pixel to the same value: fix or remove it")
    return values


def _is_flat(values: np.ndarray) -> bool:
    return values.size == 0 or bool(values.min() == values.max())


def _voi(values: np.ndarray, ds: pydicom.Dataset, name: str = "DICOM") -> tuple[np.ndarray, str, list[str]]:
    """Pick the VOI transform: a VOI LUT Sequence first (as pydicom does), then the window, then percentiles.
    A LUT or window that maps a varied image to one gray level is ignored, loudly."""
    notes: list[str] = []
    if ds.get("VOILUTSequence"):
        fraction = voi_lut(values, ds.VOILUTSequence[0], name)
        if fraction is not None and not _one_level(fraction, values):
            return fraction, "voi_lut", notes
        notes.append("VOI LUT maps the image to a single gray level: ignored, using percentile windowing")
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None:
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        if function not in WINDOW_FUNCTIONS:
            notes.append(f"unknown VOILUTFunction {quote(function)}: using LINEAR")
            function = "LINEAR"
        if not _window_is_valid(width, function):
            notes.append(f"WindowWidth {width:g} is invalid for {function}: using percentile windowing")
        elif _one_level(fraction := window(values, center, width, function), values):
            notes.append(f"window {center:g}/{width:g} maps the image to a single gray level: ignored, "
                         "using percentile windowing")
        else:
            return fraction, "window", notes
    return percentile_window(values, notes), "percentile", notes


def _one_level(fraction: np.ndarray, values: np.ndarray) -> bool:
    """True when a varied image comes out as one 8-bit gray level."""
    levels = np.rint(fraction * 255.0)
    return bool(levels.min() == levels.max()) and not _is_flat(values)


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


def voi_lut(values: np.ndarray, item: pydicom.Dataset, name: str = "DICOM") -> np.ndarray | None:
    """Apply one VOI LUT Sequence item; scaled by the LUT's own range, since LUT Descriptor bit depths are
    often wrong in the wild (e.g. 16 declared, 12 used). None if the LUT is flat."""
    first_mapped, data = _lut_item(item, "VOI LUT", name)
    index = np.clip(np.rint(values) - first_mapped, 0, len(data) - 1).astype(np.intp)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return None
    return (data[index] - low) / (high - low)


def _lut_item(item: pydicom.Dataset, what: str, name: str) -> tuple[int, np.ndarray]:
    """(first mapped value, entries) of a LUT item, or an InputError naming what is malformed."""
    descriptor = item.get("LUTDescriptor")
    if not isinstance(descriptor, (list, pydicom.multival.MultiValue)):
        descriptor = [] if descriptor is None else [descriptor]
    try:
        entries, first_mapped, _bits = (int(v) for v in descriptor)
    except (TypeError, ValueError):
        raise InputError(
            f"{name}: {what} Sequence's LUTDescriptor has {len(descriptor)} value(s), not 3 numbers: fix or remove it"
        ) from None
    data = _lut_data(item.get("LUTData"), entries or 65536)
    if data is None or not len(data):
        raise InputError(f"{name}: {what} Sequence has no LUTData: fix or remove it")
    return first_mapped, data


def _lut_data(raw, entries: int) -> np.ndarray | None:
    if raw is None or isinstance(raw, str):
        return None
    if isinstance(raw, bytes):  # OW: always little endian in the transfer syntaxes cxrlm decodes
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2")[:entries].astype(np.float64)
    try:
        return np.atleast_1d(np.asarray(raw, dtype=np.float64))[:entries]
    except (TypeError, ValueError):
        return None


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
            out[keyword] = int(value) if isinstance(value, int) else quote(value, 64)
    out["windowing"] = windowing
    out["voi_applied"] = windowing in ("window", "voi_lut")
    return out
