"""Issue 33's input cases, one test each: a J2K codestream larger than its header (and the pixel cap) refused from
its own header, cheaply; malformed DICOM attributes as one-line InputErrors; unusable pixel data refused or
warned about; file content never echoed at length; library warnings kept off stderr."""

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pydicom.uid as uids
import pytest
from fuzz_corpus import J2K_ZEROS_20000, dicom_bytes, dicom_dataset, lut_item, raw_element
from PIL import Image
from pydicom.encaps import encapsulate

from cxrlm.errors import MESSAGE_LIMIT, InputError, one_line
from cxrlm.io import load_image

BASE = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (128, 1))  # a ramp: every transform below has range to lose


def write(tmp_path, ds, name="a.dcm"):
    path = tmp_path / name
    path.write_bytes(dicom_bytes(ds))
    return path


def refused(path, match, **kw) -> str:
    with pytest.raises(InputError, match=match) as info:
        load_image(path, **kw)
    message = str(info.value)
    assert "\n" not in message and len(message) <= MESSAGE_LIMIT and message.startswith(path.name)
    return message


# --- case 3: a JPEG 2000 codestream far larger than the DICOM header says ---------------------------------

BOMB_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    from cxrlm.errors import InputError
    from cxrlm.io import load_image
    load_image(sys.argv[2])  # warm: imports and decoder plugins load outside the measurement
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        load_image(sys.argv[1])
        outcome = "loaded"
    except InputError as err:
        outcome = str(err)
    seconds = time.perf_counter() - start
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"outcome": outcome, "seconds": seconds, "grown_mb": grown_mb}))
""")


def j2k_bomb(tmp_path):
    ds = dicom_dataset(BASE, bits_stored=8, BitsAllocated=8)
    ds.PixelData = encapsulate([J2K_ZEROS_20000])  # 838 bytes that decode to 20000 x 20000 = 400 MB
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uids.JPEG2000Lossless
    return write(tmp_path, ds, "bomb.dcm")


def test_j2k_codestream_larger_than_its_header_is_refused_fast_and_small(tmp_path):
    bomb, warm = j2k_bomb(tmp_path), write(tmp_path, dicom_dataset(BASE), "warm.dcm")
    result = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(bomb), str(warm)], capture_output=True,
                            text=True, check=True, timeout=120)  # fmt: skip
    measured = json.loads(result.stdout)
    assert "the compressed image is 20000x20000" in measured["outcome"], measured
    assert measured["seconds"] < 0.5 and measured["grown_mb"] < 100, measured  # before: 10 s and 2 GB
    assert result.stderr == ""


@pytest.mark.parametrize("syntax", [uids.JPEG2000Lossless, uids.JPEGLSLossless, uids.JPEGBaseline8Bit])
def test_every_compressed_frame_header_is_checked_against_rows_and_columns(tmp_path, syntax):
    if syntax == uids.JPEGBaseline8Bit:  # pydicom has no JPEG encoder: Pillow's, encapsulated
        import io

        ds = dicom_dataset(BASE, bits_stored=8, BitsAllocated=8)
        buffer = io.BytesIO()
        Image.fromarray(BASE).save(buffer, format="JPEG")
        ds.PixelData, ds.file_meta.TransferSyntaxUID = encapsulate([buffer.getvalue()]), syntax
        ds["PixelData"].VR = "OB"
    else:
        ds = dicom_dataset(BASE)
        ds.compress(syntax)
    assert load_image(write(tmp_path, ds)).size == (128, 128)  # honest header: decodes
    ds.Rows = 64
    refused(write(tmp_path, ds), r"the compressed image is 128x128 with 1 component\(s\), the DICOM header says 128x64")


def test_deflated_dataset_is_inflated_only_up_to_the_pixel_budget(tmp_path):
    ds = dicom_dataset(BASE)
    ds.file_meta.TransferSyntaxUID = uids.DeflatedExplicitVRLittleEndian
    assert load_image(write(tmp_path, ds)).size == (128, 128)
    ds.PixelData = bytes(2**24)  # 16 MB of zeros: 16 KB deflated
    ds.file_meta.TransferSyntaxUID = uids.DeflatedExplicitVRLittleEndian
    refused(write(tmp_path, ds), "inflates to more than 1,080,576 bytes", max_pixels=4000)


# --- case 4: malformed attributes that crashed ------------------------------------------------------------

DESCRIPTOR, DATA = ("US", [256, 0, 16]), ("OW", b"\0\1" * 256)
MALFORMED = {  # case: (keyword, value or LUT item, what the message says)
    "VOI LUT, 2 descriptor values": ("VOILUTSequence", dict(LUTDescriptor=("US", [256, 0]), LUTData=DATA), "has 2 val"),
    "VOI LUT, 0 descriptor values": ("VOILUTSequence", dict(LUTDescriptor=("US", []), LUTData=DATA), "has 0 value"),
    "VOI LUT, no descriptor": ("VOILUTSequence", dict(LUTData=DATA), "LUTDescriptor has 0 value"),
    "VOI LUT, no data": ("VOILUTSequence", dict(LUTDescriptor=DESCRIPTOR), "VOI LUT Sequence has no LUTData"),
    "Modality LUT, empty item": ("ModalityLUTSequence", dict(), "Modality LUT Sequence's LUTDescriptor has 0"),
    "Modality LUT, no data": ("ModalityLUTSequence", dict(LUTDescriptor=DESCRIPTOR), "Modality LUT Sequence has no"),
    "Modality LUT, no descriptor": ("ModalityLUTSequence", dict(LUTData=DATA), "LUTDescriptor has 0"),
    "RescaleSlope abc": ("RescaleSlope", "abc", "RescaleSlope is 'abc', not a finite number"),
    "RescaleSlope empty": ("RescaleSlope", "", "RescaleSlope is empty: fix or remove it"),
    "NumberOfFrames abc": ("NumberOfFrames", "abc", "NumberOfFrames is 'abc', not a whole number"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_attributes_are_one_line_input_errors(tmp_path, case):
    keyword, value, match = MALFORMED[case]
    ds = dicom_dataset(BASE, RescaleIntercept=0, RescaleSlope=1)
    if isinstance(value, str):
        raw_element(ds, keyword, "IS" if keyword == "NumberOfFrames" else "DS", value)
    else:
        setattr(ds, keyword, [lut_item(**value)])
    refused(write(tmp_path, ds), match)


def test_one_by_one_header_over_128x128_of_data_is_refused(tmp_path):
    refused(write(tmp_path, dicom_dataset(BASE, Rows=1, Columns=1)), "32,768 bytes, 16384 times what one 1x1 frame")


# --- case 5: unusable pixel data after rescale and windowing ----------------------------------------------


@pytest.mark.parametrize("slope,intercept,match", [
    ("nan", "0", "RescaleSlope is 'nan', not a finite number"),
    ("1", "inf", "RescaleIntercept is 'inf', not a finite number"),
    ("1e308", "0", "overflows the pixel values to infinity"),
    ("1", "1e308", "maps every pixel to the same value"),
    ("0", "100", "maps every pixel to the same value"),
])  # fmt: skip
def test_rescale_leaving_no_image_is_refused(tmp_path, slope, intercept, match):
    ds = dicom_dataset(BASE)
    raw_element(ds, "RescaleSlope", "DS", slope)
    raw_element(ds, "RescaleIntercept", "DS", intercept)
    refused(write(tmp_path, ds), match)


def test_empty_voi_lut_is_refused(tmp_path):
    ds = dicom_dataset(BASE, VOILUTSequence=[lut_item(LUTDescriptor=("US", [256, 0, 16]), LUTData=("OW", b""))])
    refused(write(tmp_path, ds), "VOI LUT Sequence has no LUTData")


@pytest.mark.parametrize("center,width", [("2000", "1e308"), ("1e308", "4000")])
def test_window_mapping_everything_to_one_level_falls_back_loudly(tmp_path, center, width):
    image = load_image(write(tmp_path, dicom_dataset(BASE, WindowCenter=center, WindowWidth=width)))
    assert image.metadata["windowing"] == "percentile"
    assert any("maps the image to a single gray level: ignored" in w for w in image.warnings)
    assert image.pixels.min() == 0 and image.pixels.max() == 255


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_non_finite_values_is_refused(tmp_path, bad):
    values = BASE.astype(np.float32)
    values[3, 4] = bad
    path = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(path)
    refused(path, "1 pixel\\(s\\) are NaN or infinite")


def test_any_pillow_failure_is_an_input_error(tmp_path, monkeypatch):
    """The long fuzz run (scripts/fuzz_inputs.py, seed 2) found a bit-flipped TIFF on which Pillow raises TypeError."""
    from PIL import TiffImagePlugin

    def broken(_self):
        raise TypeError("Missing dimensions")

    path = tmp_path / "t.tif"
    Image.fromarray(BASE).save(path)
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "load", broken)
    refused(path, r"truncated or corrupt \(Missing dimensions\)")


def test_rows_64_over_128x128_of_data_is_refused_not_read_as_two_frames(tmp_path):
    refused(write(tmp_path, dicom_dataset(BASE, Rows=64)), "2 times what one 128x64 frame needs")


# --- case 8: messages and warnings ------------------------------------------------------------------------


def test_a_garbage_modality_is_quoted_short_on_one_line(tmp_path):
    garbage = ("CT\n\x1b[31m" + "Z\r\n" * 300)[:986]
    ds = dicom_dataset(BASE)
    raw_element(ds, "Modality", "LO", garbage)
    message = refused(write(tmp_path, ds), "not a radiograph")
    assert "\\n" in message and "\\x1b" in message and message.count("Z") <= 40


def test_one_line_escapes_and_caps():
    assert one_line("a\nb\x00\x1b[31m\té") == "a\\nb\\x00\\x1b[31m\\té"
    assert len(one_line("x" * 10_000)) == MESSAGE_LIMIT and one_line("x" * 10_000).endswith("...")
    assert str(InputError("bad\nvalue")) == "bad\\nvalue"


def test_pydicom_warnings_become_image_warnings_not_stderr(tmp_path, capfd):
    ds = dicom_dataset(BASE)
    raw_element(ds, "RescaleType", "LO", "HU\x1b[31m")  # an unknown escape sequence: pydicom warns
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        image = load_image(write(tmp_path, ds))
    assert not escaped and capfd.readouterr().err == ""
    assert any(w.startswith("pydicom: ") and "\n" not in w for w in image.warnings), image.warnings


def test_libtiff_errors_do_not_reach_stderr(tmp_path, capfd):
    path = tmp_path / "d.tif"
    Image.fromarray(BASE).save(path, compression="tiff_adobe_deflate")
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # inside the deflate stream
    path.write_bytes(bytes(data))
    refused(path, "truncated or corrupt")
    assert capfd.readouterr().err == ""
