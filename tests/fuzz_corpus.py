"""A seeded generator of malformed radiograph files, for tests/test_fuzz_inputs.py and scripts/fuzz_inputs.py.

Each file comes from one MAKER: a valid PNG, JPEG, TIFF or DICOM bent one way (truncated, bit-flipped, a lying
header, a garbled attribute, a decompression bomb, non-image bytes under an image name ...). Makers run in
turn, so every category appears in any corpus of len(MAKERS) files or more; the seed varies the details.
Every identifying DICOM tag carries MARKER: it must never come out of cxrlm (errors, warnings, metadata).
The base images are three fixture PNGs from ../shared/data when it is there, plus a synthetic one: the same seed
gives the same files on machines that both have, or both lack, the shared data.
"""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

MARKER = "ZZMRK^Doe7731942"  # 16 characters: fits every identifying VR
IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "ReferringPhysicianName", "StudyDescription", "OperatorsName")  # fmt: skip
SHARED_PNGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fixtures" / "nih14" / "images"
# openjpeg.encode(np.zeros((20000, 20000), np.uint8)), zlib'd: 838 bytes that decode to 400 MB (14 s, 2.4 GB to make)
J2K_ZEROS_20000 = zlib.decompress(base64.b64decode(
    "eNr77/8/kEGTAQj8FCAYBtD4jAyMjP+DGHjATFYWFgbG/zEMwg4cAgISyOh/CoMqA6NzUWpiSWqKQlKlgn9Bap5XgKu7QllqUXFmfp6CkZ6p"
    "ntH/CQxcIFOZzgLNmfz3c9rntD8399zcf3a2Wc7NzWlAKh8OoQI5N/eDuGdnn539OQ2uDgHhGrEYliAYELL+f/0oOUpSl2wAgf83AVuad7Y="
))


def build_corpus(folder: Path, count: int = 300, seed: int = 0) -> list[Path]:
    """Write `count` files into `folder`, named `NNNN-<maker>.<ext>`; the same seed gives the same files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases = _base_images(rng)
    paths = []
    for index in range(count):
        name, make = MAKERS[index % len(MAKERS)]
        with warnings.catch_warnings():  # pydicom and Pillow object to writing what we write on purpose
            warnings.simplefilter("ignore")
            data, suffix = make(rng, bases[index % len(bases)])
        path = folder / f"{index:04d}-{name}{suffix}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _base_images(rng) -> list[np.ndarray]:
    """Small 8-bit radiographs: the fixture PNGs when ../shared/data is there, else a synthetic chest-like ramp."""
    from PIL import Image

    pngs = sorted(SHARED_PNGS.glob("*.png"))[:3] if SHARED_PNGS.is_dir() else []
    bases = [np.asarray(Image.open(p).convert("L").resize((96, 80))) for p in pngs]
    yy, xx = np.mgrid[0:80, 0:96]
    synthetic = 60 + 120 * np.exp(-(((xx - 48) / 30.0) ** 2)) + rng.normal(0, 8, (80, 96))
    return bases + [np.clip(synthetic, 0, 255).astype(np.uint8)]


# --- raster files -----------------------------------------------------------------------------------------


def _pil_bytes(pixels: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **kw)
    return buffer.getvalue()


RASTERS = (("PNG", ".png", {}), ("JPEG", ".jpg", {"quality": 90}), ("TIFF", ".tif", {}),
           ("TIFF", ".tiff", {"compression": "tiff_lzw"}), ("TIFF", ".tif", {"compression": "tiff_adobe_deflate"}),
           ("BMP", ".bmp", {}))  # fmt: skip


def _a_raster(rng, base) -> tuple[bytes, str]:
    fmt, suffix, kw = RASTERS[rng.integers(len(RASTERS))]
    return _pil_bytes(base, fmt, **kw), suffix


def truncated_raster(rng, base):
    data, suffix = _a_raster(rng, base)
    return data[: int(rng.integers(1, len(data)))], suffix


def bit_flipped_raster(rng, base):
    data, suffix = _a_raster(rng, base)
    return _flip(rng, data, start=8), suffix


def _flip(rng, data: bytes, start: int = 0, flips: int | None = None) -> bytes:
    out = bytearray(data)
    for _ in range(flips or int(rng.integers(1, 20))):
        out[int(rng.integers(start, len(out)))] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, depth: int, color: int, idat: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))  # fmt: skip


def png_bad_header(rng, base):
    """IHDR sizes and bit depths a decoder must refuse or survive: huge, zero, invalid depth/colour pairs."""
    width, height = [(100_000, 100_000), (0, 50), (50, 0), (2**31 - 1, 1), (1, 2**31 - 1), (96, 80)][rng.integers(6)]
    depth, color = [(8, 0), (3, 0), (16, 3), (7, 2), (8, 5), (1, 6)][rng.integers(6)]
    return _png(width, height, depth, color, zlib.compress(base.tobytes()[:4000])), ".png"


def png_bad_chunks(rng, base):
    """A valid IHDR with broken chunks: wrong CRC, an unknown critical chunk, a giant zTXt, IDAT of garbage."""
    height, width = base.shape
    rows = b"".join(b"\x00" + row.tobytes() for row in base)
    case = rng.integers(5)
    if case == 0:
        data = bytearray(_png(width, height, 8, 0, zlib.compress(rows)))
        data[29] ^= 0xFF  # IHDR's CRC
        return bytes(data), ".png"
    bomb_text = b"k\x00\x00" + zlib.compress(b"\x00" * 10**7)
    extra = [_png_chunk(b"ZZZZ", b"critical and unknown"), _png_chunk(b"zTXt", bomb_text),
             _png_chunk(b"PLTE", rng.bytes(7)), b""][case - 1]  # fmt: skip
    idat = zlib.compress(rows) if case < 4 else rng.bytes(300)
    return _png(width, height, 8, 0, idat, extra), ".png"


def png_decompression_bomb(rng, base):
    """A header within any pixel cap but IDAT that inflates far beyond it; or a header far above the cap."""
    side = [4000, 9000, 30000][rng.integers(3)]
    rows = zlib.compress(b"\x00" * (side + 1) * min(side, 2000), 9)  # only part of the rows: also truncated
    return _png(side, side, 8, 0, rows), ".png"


def jpeg_bad_sof(rng, base):
    """A real JPEG whose SOF0 says another size (huge, zero, or one pixel)."""
    data = bytearray(_pil_bytes(base, "JPEG"))
    sof = data.find(b"\xff\xc0")
    height, width = [(65535, 65535), (0, 96), (80, 0), (1, 1), (65535, 1)][rng.integers(5)]
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data), ".jpg"


def tiff_float(rng, base):
    """Float TIFFs with NaN, infinities, a 1e308 range or a single value."""
    from PIL import Image

    values = base.astype(np.float32)
    case = rng.integers(5)
    if case == 0:
        values[rng.integers(0, values.shape[0], 5), rng.integers(0, values.shape[1], 5)] = np.nan
    elif case == 1:
        values[:] = np.nan
    elif case == 2:
        values[0, 0], values[1, 1] = np.inf, -np.inf
    elif case == 3:
        values = values.astype(np.float64) * 1e306  # mode F is float32: saturates to +-inf or stays huge
        values = np.clip(values, -3e38, 3e38).astype(np.float32)
    else:
        values[:] = 7.0
    buffer = io.BytesIO()
    Image.fromarray(values, mode="F").save(buffer, format="TIFF")
    return buffer.getvalue(), ".tif"


def tiff_bad_tags(rng, base):
    """A TIFF with its width/height/strip tags overwritten, or several pages."""
    from PIL import Image

    if rng.integers(4) == 0:
        buffer = io.BytesIO()
        Image.fromarray(base).save(buffer, format="TIFF", save_all=True, append_images=[Image.fromarray(base)] * 2)
        return buffer.getvalue(), ".tif"
    data = bytearray(_pil_bytes(base, "TIFF"))
    offset = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, offset)[0]
    targets = {256: [0, 1, 70000, 2**31], 257: [0, 1, 70000, 2**31], 273: [0, 2**31, 10**9], 279: [0, 2**31],
               258: [0, 3, 64], 277: [0, 9, 1000]}  # fmt: skip
    for index in range(entries):
        at = offset + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, at)
        if tag in targets and rng.integers(2):
            choices = targets[tag]
            value = int(choices[rng.integers(len(choices))])
            struct.pack_into("<HHII", data, at, tag, 4, 1, value)  # as one LONG, whatever it was
    return bytes(data), ".tif"


def not_an_image(rng, base):
    """Bytes that are no image under an image name, including image magic numbers followed by garbage."""
    suffix = [".png", ".jpg", ".jpeg", ".tif", ".dcm", ".bmp"][rng.integers(6)]
    body = [rng.bytes(int(rng.integers(1, 3000))), b"FINDINGS: no acute disease.\n" * 30,
            b"<html><body>404 Not Found</body></html>", b"PK\x03\x04" + rng.bytes(200),
            b"\x1f\x8b\x08\x00" + rng.bytes(200), b"\x7fELF" + rng.bytes(100), b"\x00" * 200, b"x",
            b"\x89PNG\r\n\x1a\n" + rng.bytes(100), b"\xff\xd8\xff" + rng.bytes(100), b"II*\x00" + rng.bytes(100),
            b"MM\x00*" + rng.bytes(100), b"II+\x00" + rng.bytes(100), b"BM" + rng.bytes(100),
            b"\x00" * 128 + b"DICM" + rng.bytes(200)]  # fmt: skip
    return body[rng.integers(len(body))], suffix


def bmp_bad_header(rng, base):
    data = bytearray(_pil_bytes(base, "BMP"))
    width, height = [(2**31 - 1, 1), (1, -(2**31)), (0, 0), (100000, 100000), (-5, 5)][rng.integers(5)]
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data), ".bmp"


# --- DICOM files ------------------------------------------------------------------------------------------


def dicom_dataset(pixels: np.ndarray, bits_stored: int = 12, **tags):
    """A valid DX dataset of 16-bit pixels (the 8-bit base scaled to `bits_stored`), identity tags = MARKER."""
    import pydicom.uid as uids
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = uids.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = uids.generate_uid(entropy_srcs=[str(pixels.sum()), str(tags)])
    ds.SOPClassUID = uids.DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in IDENTIFYING_TAGS:
        setattr(ds, keyword, "19410807" if keyword.endswith("Date") else MARKER)
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = (pixels.astype(np.uint16) << (bits_stored - 8)).tobytes()
    ds["PixelData"].VR = "OW"  # explicit: pydicom would otherwise derive it from BitsAllocated, garbled or not
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds) -> bytes:
    import pydicom

    buffer = io.BytesIO()
    pydicom.config.replace_un_with_known_vr = False  # write raw UN garbage as it is (see raw_element)
    try:
        with warnings.catch_warnings():  # about the malformed values we write on purpose
            warnings.simplefilter("ignore")
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    finally:
        pydicom.config.replace_un_with_known_vr = True
    return buffer.getvalue()


def lut_item(**elements):
    """A sequence item; `elements` maps keyword -> (VR, value), so malformed values keep their VR."""
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, (vr, value) in elements.items():
        item.add_new(keyword, vr, value)
    return item


def _lut(count: int) -> bytes:
    return np.linspace(0, 4095, count).astype("<u2").tobytes()


def dicom_broken_voi_lut(rng, base):
    """VOI LUT Sequence items with 0, 2 or no descriptor values, no data, empty data, or a count that lies."""
    items = [lut_item(LUTDescriptor=("US", [4096, 0]), LUTData=("OW", _lut(4096))),
             lut_item(LUTDescriptor=("US", []), LUTData=("OW", _lut(4096))),
             lut_item(LUTData=("OW", _lut(4096))),
             lut_item(LUTDescriptor=("US", [4096, 0, 16])),
             lut_item(LUTDescriptor=("US", [4096, 0, 16]), LUTData=("OW", b"")),
             lut_item(LUTDescriptor=("US", [0, 0, 16]), LUTData=("OW", _lut(3))),
             lut_item(LUTDescriptor=("US", [10, 65535, 16]), LUTData=("OW", _lut(10))),
             lut_item(LUTDescriptor=("US", [4096, 0, 16]), LUTData=("OW", b"\x00\x00" * 4096)),
             lut_item()]  # fmt: skip
    ds = dicom_dataset(base, VOILUTSequence=[items[rng.integers(len(items))]])
    return dicom_bytes(ds), ".dcm"


def dicom_broken_modality_lut(rng, base):
    """Modality LUT Sequence items missing their descriptor or data, or with too few descriptor values."""
    descriptor = ("US", [4096, 0, 16])
    items = [lut_item(), lut_item(LUTDescriptor=("US", [4096, 0])), lut_item(LUTData=("OW", _lut(4096))),
             lut_item(LUTDescriptor=descriptor), lut_item(LUTDescriptor=descriptor, LUTData=("OW", b"")),
             lut_item(LUTDescriptor=descriptor, LUTData=("OW", _lut(4096)), ModalityLUTType=("LO", "US"))]  # fmt: skip
    ds = dicom_dataset(base)
    ds.ModalityLUTSequence = [items[rng.integers(len(items))]] if rng.integers(6) else []
    return dicom_bytes(ds), ".dcm"


NUMBERS = ("abc", "", " ", "nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e-320", "0", "1\\2", "12345678901234567")


def dicom_garbled_numbers(rng, base):
    """Rescale slope/intercept, window centre/width and frame counts that are not usable numbers."""
    ds = dicom_dataset(base)
    keyword = ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "NumberOfFrames")[rng.integers(5)]
    raw_element(ds, keyword, "IS" if keyword == "NumberOfFrames" else "DS", NUMBERS[rng.integers(len(NUMBERS))])
    partner = {"RescaleSlope": ("RescaleIntercept", "0"), "RescaleIntercept": ("RescaleSlope", "1"),
               "WindowCenter": ("WindowWidth", "2000"), "WindowWidth": ("WindowCenter", "2000")}.get(keyword)
    if partner:  # the transform applies only when both of its attributes are there
        ds.add_new(partner[0], "DS", partner[1])
    return dicom_bytes(ds), ".dcm"


def dicom_lying_size(rng, base):
    """Rows/Columns/NumberOfFrames that disagree with the length of the pixel data (128x128 of it)."""
    pixels = np.resize(base, (128, 128))
    sizes = [(1, 1, None), (64, 128, None), (128, 64, None), (64, 64, None), (256, 256, None), (64, 128, 2),
             (128, 128, 3), (1, 16384, None), (16384, 1, None)]  # fmt: skip
    rows, columns, frames = sizes[rng.integers(len(sizes))]
    ds = dicom_dataset(pixels, Rows=rows, Columns=columns)
    if frames:
        ds.NumberOfFrames = frames
    return dicom_bytes(ds), ".dcm"


GARBLE_TAGS = (("Modality", "CS"), ("PhotometricInterpretation", "CS"), ("ViewPosition", "CS"),
               ("VOILUTFunction", "CS"), ("RescaleType", "LO"), ("PixelSpacing", "DS"), ("ImagerPixelSpacing", "DS"),
               ("SamplesPerPixel", "US"), ("BitsAllocated", "US"), ("BitsStored", "US"), ("HighBit", "US"),
               ("PixelRepresentation", "US"), ("PlanarConfiguration", "US"), ("Rows", "US"), ("Columns", "US"),
               ("WindowCenter", "DS"), ("NumberOfFrames", "IS"))  # fmt: skip (not SOPClassUID: it must go in the meta)


def _garbage_text(rng) -> str:
    """Up to 1000 characters with newlines, escape sequences and other control characters."""
    alphabet = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \\^.-_é") + ["\n", "\r", "\t", "\x00", "\x1b[31m", "\x7f"]
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(1, 1000))))


def dicom_garbled_attribute(rng, base):
    """One pipeline attribute's bytes replaced by garbage, under its own VR or a text VR."""
    ds = dicom_dataset(base)
    keyword, vr = GARBLE_TAGS[rng.integers(len(GARBLE_TAGS))]
    case = rng.integers(3)
    if case == 0:
        value = _garbage_text(rng)
    elif case == 1:
        value = rng.bytes(int(rng.choice([1, 2, 3, 4, 8])))
    else:
        value = "\\".join(_garbage_text(rng)[:20] for _ in range(int(rng.integers(1, 5))))
    raw_element(ds, keyword, vr if rng.integers(2) else "LO", value)
    return dicom_bytes(ds), ".dcm"


def raw_element(ds, keyword: str, vr: str, value: str | bytes) -> None:
    """Store `value` unchecked: as text under a text VR, else as raw bytes the reader converts to `keyword`'s VR
    (written as UN, which pydicom reads back as the dictionary VR; it refuses to write most malformed values)."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    data = value.encode("latin-1", "replace") if isinstance(value, str) else value
    if vr in ("LO", "LT", "UT"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.add_new(keyword, vr, data.decode("latin-1"))
        return
    data += b" " * (len(data) % 2)
    tag = tag_for_keyword(keyword)
    ds[tag] = RawDataElement(Tag(tag), "UN", len(data), data, 0, False, True)


def dicom_bad_pixel_format(rng, base):
    """Bit depths, signs, sample counts and photometrics that disagree with each other or with the data."""
    ds = dicom_dataset(base)
    case = rng.integers(7)
    if case == 0:
        ds.BitsStored, ds.HighBit = 20, 19  # more than allocated
    elif case == 1:
        ds.BitsAllocated = int(rng.choice([0, 1, 8, 12, 32, 64]))
    elif case == 2:
        ds.PixelRepresentation = 2
    elif case == 3:
        ds.SamplesPerPixel = int(rng.choice([0, 2, 3, 4]))
    elif case == 4:
        ds.PhotometricInterpretation = str(rng.choice(["RGB", "YBR_FULL", "PALETTE COLOR", "MONOCHROME3", "HSV", ""]))
    elif case == 5:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7  # 16-bit data read as 8-bit: twice the pixels
    else:
        ds.PixelData = ds.PixelData[: int(rng.integers(0, len(ds.PixelData)))]
    return dicom_bytes(ds), ".dcm"


def dicom_rescale_and_window(rng, base):
    """Finite but unusable transforms: a 1e308 slope or intercept, a 1e308 or 1e-300 window, a zero slope."""
    ds = dicom_dataset(base)
    case = rng.integers(6)
    if case == 0:
        ds.RescaleSlope, ds.RescaleIntercept = "1e308", "0"
    elif case == 1:
        ds.RescaleSlope, ds.RescaleIntercept = "1", "1e308"
    elif case == 2:
        ds.RescaleSlope, ds.RescaleIntercept = "0", "100"
    elif case == 3:
        ds.WindowCenter, ds.WindowWidth = "2000", "1e308"
    elif case == 4:
        ds.WindowCenter, ds.WindowWidth = "1e308", "4000"
    else:
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = "2000", "1e-300", "SIGMOID"
    return dicom_bytes(ds), ".dcm"


def _compressed(base, syntax):
    ds = dicom_dataset(base)
    ds.compress(syntax, encoding_plugin="pylibjpeg" if "2000" in syntax.name else "", generate_instance_uid=False)
    return ds


def dicom_lying_codestream(rng, base):
    """Compressed pixel data whose codestream disagrees with the header: size, components, or a 20000x20000 bomb."""
    import pydicom.uid as uids
    from pydicom.encaps import encapsulate

    syntax = [uids.JPEG2000Lossless, uids.JPEGLSLossless, uids.RLELossless, uids.JPEGBaseline8Bit][rng.integers(4)]
    if syntax == uids.JPEGBaseline8Bit:
        ds = dicom_dataset(base, bits_stored=8, BitsAllocated=8)
        ds.PixelData = encapsulate([_pil_bytes(base, "JPEG")])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds = _compressed(base, syntax)
    case = rng.integers(4)
    if case == 0:
        ds = _compressed(base, uids.JPEG2000Lossless)
        ds.PixelData = encapsulate([J2K_ZEROS_20000])  # header still says 80x96
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    elif case == 1:
        sizes = [(1, 1), (8, 8), (80, 4000), (4000, 4000), (base.shape[0] * 2, base.shape[1])]
        ds.Rows, ds.Columns = sizes[rng.integers(len(sizes))]
    elif case == 2:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    else:
        fragment = bytearray(ds.PixelData)
        ds.PixelData = _flip(rng, bytes(fragment), start=16, flips=int(rng.integers(1, 6)))
    return dicom_bytes(ds), ".dcm"


def dicom_broken_file(rng, base):
    """A valid DICOM cut short, bit-flipped, without its preamble, or deflated into a bomb."""
    case = rng.integers(4)
    data = dicom_bytes(dicom_dataset(base))
    if case == 0:
        return data[: int(rng.integers(132, len(data)))], ".dcm"
    if case == 1:
        return _flip(rng, data, start=132), ".dcm"
    if case == 2:
        return data[128 + 4 :], ".dcm"  # "DICM" without the preamble: not a DICOM by its first bytes
    return _deflated_bomb(rng), ".dcm"


def _deflated_bomb(rng) -> bytes:
    """Deflated Explicit VR: a 16 KB file of 64x64 pixels whose dataset inflates to 16 MB (zlib reaches 1000:1)."""
    import pydicom.uid as uids

    ds = dicom_dataset(np.zeros((64, 64), np.uint8))
    ds.PixelData = bytes(2**24)
    ds.file_meta.TransferSyntaxUID = uids.DeflatedExplicitVRLittleEndian
    return dicom_bytes(ds)


def dicom_valid_with_marker(rng, base):
    """A readable DICOM (sometimes compressed, sometimes MONOCHROME1) whose identifying tags hold MARKER."""
    import pydicom.uid as uids

    syntaxes = [uids.ExplicitVRLittleEndian, uids.JPEG2000Lossless, uids.RLELossless, uids.JPEGLSLossless]
    syntax = syntaxes[rng.integers(len(syntaxes))]
    ds = _compressed(base, syntax) if syntax != uids.ExplicitVRLittleEndian else dicom_dataset(base)
    if rng.integers(2):
        ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SeriesDescription = MARKER + "\n\x1b[31m" + "x" * 500
    return dicom_bytes(ds), ".dcm"


MAKERS = tuple((fn.__name__, fn) for fn in (
    truncated_raster, bit_flipped_raster, png_bad_header, png_bad_chunks, png_decompression_bomb, jpeg_bad_sof,
    tiff_float, tiff_bad_tags, not_an_image, bmp_bad_header,
    dicom_broken_voi_lut, dicom_broken_modality_lut, dicom_garbled_numbers, dicom_lying_size,
    dicom_garbled_attribute, dicom_bad_pixel_format, dicom_rescale_and_window, dicom_lying_codestream,
    dicom_broken_file, dicom_valid_with_marker,
))  # fmt: skip


# --- outcomes ---------------------------------------------------------------------------------------------


def load_problem(path: Path) -> str | None:
    """Load one file; None if the outcome is allowed (an image, or cxrlm's own one-line InputError), else why not."""
    from cxrlm.errors import MESSAGE_LIMIT, InputError
    from cxrlm.io import load_image

    try:
        image = load_image(path)
    except InputError as err:
        return message_problem(path.name, str(err), MESSAGE_LIMIT)
    except Exception as err:  # noqa: BLE001 - exactly what the fuzz test hunts for
        return f"{path.name}: unhandled {type(err).__name__}: {str(err)[:200]!r}"
    texts = image.warnings + [str(image.metadata)]
    if image.pixels.dtype != np.uint8 or image.pixels.ndim != 2:
        return f"{path.name}: loaded as {image.pixels.dtype} {image.pixels.shape}"
    if image.pixels.min() == image.pixels.max() and "image has a single gray level" not in image.warnings:
        return f"{path.name}: loaded a single gray level without saying so"
    return next((message_problem(path.name, text, MESSAGE_LIMIT, own=False) for text in texts
                 if message_problem(path.name, text, MESSAGE_LIMIT, own=False)), None)  # fmt: skip


def message_problem(name: str, message: str, limit: int, own: bool = True) -> str | None:
    """A message or warning must be one printable line, capped, and never carry an identifying tag's value."""
    if not message.isprintable() or len(message) > limit:
        return f"{name}: not one short printable line: {message[:200]!r}"
    if MARKER in message:
        return f"{name}: an identifying tag's value came out: {message[:200]!r}"
    if own and not message.startswith(name):
        return f"{name}: the message does not name the file: {message[:200]!r}"
    return None
