"""cxrlm.io.dicom: the DICOM pixel pipeline, checked value by value on small synthetic datasets, on DICOMs
made from the fixture PNGs, and on the real MONOCHROME1 JPEG 2000 CR fixture."""

from types import SimpleNamespace

import numpy as np
import pydicom
import pydicom.uid as uids
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing, get_encoder

from cxrlm.errors import InputError
from cxrlm.io import dicom, load_image

IDENTITY = {  # planted in every synthetic file: none of it may come out
    "PatientName": "Doe^Jane",
    "PatientID": "PID-7731942",
    "PatientBirthDate": "19410807",
    "AccessionNumber": "ACC-5550123",
    "InstitutionName": "Saint Nowhere General",
    "ReferringPhysicianName": "House^Gregory",
    "StudyDate": "20190312",
}
RAMP_12BIT = np.array([[0, 1024, 2048, 3072, 4095]], dtype=np.uint16)
RAMP_12BIT_EXACT = [0, 64, 128, 191, 255]  # LINEAR_EXACT c=2048 w=4096: (x - 2048) / 4096 + 0.5, x 255, rounded
TILE = (64, 13)  # big enough for OpenJPEG's default number of resolutions


def make_dicom(path, arr, *, photometric="MONOCHROME2", bits_stored=None, signed=False, modality="DX",
               syntax=uids.ExplicitVRLittleEndian, raw=None, **tags):  # fmt: skip
    """Write a single-frame DX file; `raw` overrides the PixelData bytes (e.g. garbage in unused bits)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = uids.DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = uids.generate_uid()
    ds.SOPClassUID = uids.DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword, value in IDENTITY.items():
        setattr(ds, keyword, value)
    if modality:
        ds.Modality = modality
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = raw if raw is not None else arr.tobytes()
    if syntax != uids.ExplicitVRLittleEndian:
        ds.compress(syntax, arr)
    ds.save_as(path, enforce_file_format=True)
    return path


def window_12bit(tmp_path, **kw):
    tags = {"WindowCenter": 2048, "WindowWidth": 4096, "VOILUTFunction": "LINEAR_EXACT"} | kw.pop("tags", {})
    return load_image(make_dicom(tmp_path / "w.dcm", kw.pop("arr", RAMP_12BIT), bits_stored=12, **kw, **tags))


# --- hand-computed pixel values --------------------------------------------------------------------------


def test_12bit_linear_exact_window(tmp_path):
    image = window_12bit(tmp_path)
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (1, 5)
    assert image.pixels[0].tolist() == RAMP_12BIT_EXACT
    assert image.metadata["voi_applied"] is True and image.metadata["windowing"] == "window"


def test_monochrome1_is_inverted_after_windowing(tmp_path):
    image = window_12bit(tmp_path, photometric="MONOCHROME1")
    assert image.pixels[0].tolist() == [255 - v for v in RAMP_12BIT_EXACT]


def test_8bit_window(tmp_path):
    arr = np.array([[0, 64, 128, 255]], dtype=np.uint8)
    path = make_dicom(tmp_path / "a.dcm", arr, WindowCenter=128, WindowWidth=256, VOILUTFunction="LINEAR_EXACT")
    assert load_image(path).pixels[0].tolist() == [0, 64, 128, 254]


def test_16bit_full_range_window(tmp_path):
    arr = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    path = make_dicom(tmp_path / "a.dcm", arr, WindowCenter=32768, WindowWidth=65536, VOILUTFunction="LINEAR_EXACT")
    assert load_image(path).pixels[0].tolist() == [0, 64, 128, 255]


def test_signed_pixels_with_rescale_and_default_linear_window(tmp_path):
    # modality values 2x - 1000 = [-2000, -1000, 0, -500, -1500]; LINEAR c=-1000 w=2001 spans -2000.5..-0.5:
    # ((y + 1000.5) / 2000 + 0.5) x 255 = [0.06, 127.56, clipped, 191.31, 63.81]
    arr = np.array([[-500, 0, 500, 250, -250]], dtype=np.int16)
    path = make_dicom(tmp_path / "a.dcm", arr, signed=True, RescaleSlope=2, RescaleIntercept=-1000,
                      WindowCenter=-1000, WindowWidth=2001)  # fmt: skip
    assert load_image(path).pixels[0].tolist() == [0, 128, 255, 191, 64]


def test_unused_high_bits_are_masked_and_12bit_signed_is_sign_extended(tmp_path):
    stored = np.array([[-2048, -1, 0, 2047]], dtype=np.int16)
    raw = ((stored.astype(np.uint16) & 0x0FFF) | 0xA000).astype("<u2").tobytes()  # garbage in bits 12-15
    path = make_dicom(tmp_path / "a.dcm", stored, bits_stored=12, signed=True, raw=raw,
                      WindowCenter=0, WindowWidth=4096, VOILUTFunction="LINEAR_EXACT")  # fmt: skip
    # (x / 4096 + 0.5) x 255 = [0, 127.44, 127.5, 254.94]
    assert load_image(path).pixels[0].tolist() == [0, 127, 128, 255]


def test_sigmoid_window(tmp_path):
    arr = np.array([[100, 150, 50, 0, 200]], dtype=np.uint16)
    path = make_dicom(tmp_path / "a.dcm", arr, WindowCenter=100, WindowWidth=200, VOILUTFunction="SIGMOID")
    # 255 / (1 + exp(-4 (x - 100) / 200)) = [127.5, 186.42, 68.58, 30.40, 224.60]
    assert load_image(path).pixels[0].tolist() == [128, 186, 69, 30, 225]


def voi_lut_item(descriptor, data, vr):
    item = Dataset()
    item.add_new("LUTDescriptor", "US", descriptor)
    item.add_new("LUTData", vr, np.array(data, "<u2").tobytes() if vr == "OW" else data)
    return item


@pytest.mark.parametrize("vr", ["OW", "US"])
def test_voi_lut_sequence_wins_over_window(tmp_path, vr):
    arr = np.array([[5, 10, 11, 12, 13, 99]], dtype=np.uint16)
    # 4 entries from value 10: x < 10 -> entry 0, x > 13 -> entry 3; scaled by the LUT's range 0..200
    lut = voi_lut_item([4, 10, 16], [0, 50, 100, 200], vr)
    path = make_dicom(tmp_path / "a.dcm", arr, VOILUTSequence=[lut], WindowCenter=1, WindowWidth=2)
    image = load_image(path)
    assert image.pixels[0].tolist() == [0, 0, 64, 128, 255, 255]
    assert image.metadata["windowing"] == "voi_lut"


def test_first_of_several_windows_is_used(tmp_path):
    image = window_12bit(tmp_path, tags={"WindowCenter": [2048, 100], "WindowWidth": [4096, 10]})
    assert image.pixels[0].tolist() == RAMP_12BIT_EXACT


def test_percentile_fallback_ignores_outliers(tmp_path):
    arr = np.tile(np.arange(100, 300, dtype=np.uint16), (10, 1))
    arr[0, 0], arr[0, 1] = 60000, 0  # two burned-in outliers out of 2000 pixels
    image = load_image(make_dicom(tmp_path / "a.dcm", arr))
    assert image.metadata["windowing"] == "percentile" and image.metadata["voi_applied"] is False
    row = image.pixels[5]
    assert row[0] <= 2 and row[-1] >= 253  # the real range still spans the output
    assert np.all(np.diff(row.astype(int)) >= 0)


def test_invalid_window_width_falls_back_with_warning(tmp_path):
    image = window_12bit(tmp_path, tags={"WindowWidth": 0})
    assert image.metadata["windowing"] == "percentile"
    assert any("WindowWidth 0" in w for w in image.warnings)
    assert image.pixels[0, 0] == 0 and image.pixels[0, -1] == 255


def test_rgb_dicom_becomes_gray(tmp_path):
    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, 0, 0], rgb[0, 1, 1], rgb[0, 2, 2] = 255, 255, 255  # pure red, green, blue
    image = load_image(make_dicom(tmp_path / "a.dcm", rgb, photometric="RGB", modality="OT"))
    assert image.pixels[0].tolist() == [76, 150, 29]  # ITU-R 601 weights, as for PNG
    assert "color DICOM converted to grayscale" in image.warnings


def test_flat_image_warns(tmp_path):
    image = load_image(make_dicom(tmp_path / "a.dcm", np.full((4, 4), 7, dtype=np.uint16)))
    assert not image.pixels.any() and "image has a single gray level" in image.warnings


# --- compressed transfer syntaxes ---------------------------------------------------------------------------

COMPRESSED = [uids.RLELossless, uids.JPEG2000Lossless, uids.JPEGLSLossless]


@pytest.mark.parametrize("syntax", COMPRESSED, ids=lambda s: s.name)
def test_compressed_12bit_decodes_to_the_same_values(tmp_path, syntax):
    if not get_encoder(syntax).is_available:  # JPEG-LS encoding needs pyjpegls (test extra)
        pytest.skip(f"no encoder for {syntax.name}")
    arr = np.tile(RAMP_12BIT, TILE)
    image = window_12bit(tmp_path, arr=arr, syntax=syntax, photometric="MONOCHROME1")
    assert image.metadata["TransferSyntaxUID"] == str(syntax)
    assert (image.pixels == 255 - np.tile(RAMP_12BIT_EXACT, TILE)).all()


def test_missing_decoder_plugin_names_the_package(tmp_path, monkeypatch):
    path = make_dicom(tmp_path / "a.dcm", np.tile(RAMP_12BIT, TILE), bits_stored=12, syntax=uids.JPEG2000Lossless)
    monkeypatch.setattr(dicom, "get_decoder", lambda uid: SimpleNamespace(is_available=False))
    with pytest.raises(InputError, match="pip install pylibjpeg pylibjpeg-openjpeg"):
        load_image(path)


def test_transfer_syntax_without_any_decoder_is_refused(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP_12BIT, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = uids.MPEG2MPML
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 10])
    ds.save_as(path)
    with pytest.raises(InputError, match="not supported"):
        load_image(path)


# --- window math: properties, and agreement with pydicom's own implementation ------------------------------

FUNCTIONS = st.sampled_from(dicom.WINDOW_FUNCTIONS)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.integers(-32768, 65535), min_size=1, max_size=50),
    center=st.floats(-40000, 70000),
    width=st.floats(1, 70000),
    function=FUNCTIONS,
)
def test_window_is_bounded_and_monotonic(values, center, width, function):
    x = np.sort(np.array(values, dtype=np.float64))
    out = dicom.window(x, center, width, function)
    assert np.all((out >= 0) & (out <= 1))
    assert np.all(np.diff(out) >= 0)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.integers(0, 4095), min_size=1, max_size=30),
    center=st.integers(-500, 4500),
    width=st.integers(2, 5000),
    function=FUNCTIONS,
)
def test_window_agrees_with_pydicom(values, center, width, function):
    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation = 12, 0, "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    x = np.array(values, dtype=np.float64)
    reference = apply_windowing(x.copy(), ds) / 4095.0  # pydicom maps onto 0..2^BitsStored - 1
    assert np.allclose(dicom.window(x, center, width, function), reference, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200))
def test_percentile_window_stays_in_range(values):
    out = dicom.percentile_window(np.array(values))
    assert np.all((out >= 0) & (out <= 1))


# --- refusals ---------------------------------------------------------------------------------------------


def assert_one_line_error(path, match, **kw):
    with pytest.raises(InputError, match=match) as info:
        load_image(path, **kw)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    assert not any(value in message for value in IDENTITY.values())


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "PT", "SR"])
def test_non_radiograph_modalities_are_refused(tmp_path, modality):
    assert_one_line_error(make_dicom(tmp_path / "a.dcm", RAMP_12BIT, modality=modality), f"Modality is {modality}")


@pytest.mark.parametrize("modality", dicom.RADIOGRAPH_MODALITIES)
def test_radiograph_modalities_are_accepted(tmp_path, modality):
    assert load_image(make_dicom(tmp_path / "a.dcm", RAMP_12BIT, modality=modality)).metadata["Modality"] == modality


def test_missing_modality_is_accepted_with_a_warning(tmp_path):
    image = load_image(make_dicom(tmp_path / "a.dcm", RAMP_12BIT, modality=None))
    assert "Modality" not in image.metadata and any("no Modality" in w for w in image.warnings)


def test_no_pixel_data(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP_12BIT)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    assert_one_line_error(path, "no pixel data")


def test_float_pixel_data_is_refused(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP_12BIT)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.FloatPixelData = np.zeros(5, dtype="<f4").tobytes()
    ds.save_as(path)
    assert_one_line_error(path, "float pixel data is not supported")


def test_multi_frame_is_refused(tmp_path):
    frames = np.zeros((2, 4, 5), dtype=np.uint16)
    path = make_dicom(tmp_path / "a.dcm", frames[0], raw=frames.tobytes(), NumberOfFrames=2)
    assert_one_line_error(path, "2 frames: extract one frame")


def test_pixel_count_is_checked_before_decoding(tmp_path):
    # Header claims 10000 x 10000 but holds 10 bytes: decoding first would fail with a different message.
    path = make_dicom(tmp_path / "a.dcm", RAMP_12BIT, raw=b"\x00" * 10, Rows=10000, Columns=10000)
    assert_one_line_error(path, "100,000,000 pixels exceeds max_pixels=50,000,000")
    assert_one_line_error(path, "exceeds max_pixels=1,000", max_pixels=1000)


def test_truncated_pixel_data(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP_12BIT, raw=b"\x00" * 4, Rows=100, Columns=100)
    assert_one_line_error(path, "pixel data is truncated or corrupt")


def test_corrupt_j2k_codestream(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", np.tile(RAMP_12BIT, TILE), bits_stored=12, syntax=uids.JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 40])
    ds.save_as(path)
    assert_one_line_error(path, "pixel data is truncated or corrupt")


def test_palette_color_is_refused(tmp_path):
    assert_one_line_error(make_dicom(tmp_path / "a.dcm", RAMP_12BIT, photometric="PALETTE COLOR"), "PALETTE COLOR")


def test_text_renamed_dcm_is_refused(tmp_path):
    path = tmp_path / "report.dcm"
    path.write_text("FINDINGS: no acute cardiopulmonary process.\n" * 20)
    assert_one_line_error(path, "not a PNG, JPEG, TIFF or DICOM")


def test_dicm_prefix_with_garbage_is_refused(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"junk")
    assert_one_line_error(path, "corrupt or truncated")


def test_truncated_file_is_refused(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", np.tile(RAMP_12BIT, TILE), bits_stored=12)
    path.write_bytes(path.read_bytes()[:-300])  # an interrupted download
    assert_one_line_error(path, "truncated")


def test_dicom_without_preamble_is_read(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP_12BIT, bits_stored=12, WindowCenter=2048, WindowWidth=4096,
                      VOILUTFunction="LINEAR_EXACT")  # fmt: skip
    ds = pydicom.dcmread(path)
    ds.preamble, ds.file_meta = None, FileMetaDataset()  # a bare dataset, as some old archives write
    ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    assert load_image(path).pixels[0].tolist() == RAMP_12BIT_EXACT


# --- spacing, view and privacy ----------------------------------------------------------------------------


def test_pixel_spacing_prefers_pixel_spacing_then_imager(tmp_path):
    both = make_dicom(tmp_path / "a.dcm", RAMP_12BIT, PixelSpacing=[0.2, 0.25], ImagerPixelSpacing=[0.3, 0.3])
    imager = make_dicom(tmp_path / "b.dcm", RAMP_12BIT, ImagerPixelSpacing=[0.139, 0.14])
    assert load_image(both).pixel_spacing == (0.2, 0.25)
    assert load_image(imager).pixel_spacing == (0.139, 0.14)
    assert load_image(make_dicom(tmp_path / "c.dcm", RAMP_12BIT)).pixel_spacing is None


def test_view_position_from_dicom_wins_and_lateral_warns(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", RAMP_12BIT, ViewPosition="LL")
    image = load_image(path, view_position="PA")
    assert image.view_position == "LL"
    assert "lateral view: most CXR models expect a frontal view" in image.warnings
    assert any("argument says PA" in w for w in image.warnings)
    assert load_image(make_dicom(tmp_path / "b.dcm", RAMP_12BIT), view_position="ap").view_position == "AP"
    decubitus = load_image(make_dicom(tmp_path / "c.dcm", RAMP_12BIT, ViewPosition="RLD"))
    assert decubitus.view_position is None and any("ViewPosition 'RLD'" in w for w in decubitus.warnings)


def test_synthetic_identity_never_leaks(tmp_path):
    image = window_12bit(tmp_path, ViewPosition="PA", PixelSpacing=[0, 0])
    text = repr(image) + str(image.metadata) + " ".join(image.warnings)
    assert not any(value in text for value in IDENTITY.values())
    assert set(image.metadata) <= set(dicom.SAFE_METADATA_TAGS) | {"windowing", "voi_applied"}


# --- DICOMs made from the real fixture PNGs ------------------------------------------------------------------


def test_fixture_png_round_trips_through_monochrome1_12bit(tmp_path, fixture_pngs):
    original = np.asarray(Image.open(fixture_pngs[0]).convert("L"), dtype=np.uint16)
    stored = 4095 - original * 16  # MONOCHROME1: dense bone = low stored value
    image = window_12bit(tmp_path, arr=stored, photometric="MONOCHROME1")
    # window 0..4096 maps x -> x/16 (+ 0.5/16 rounding), then MONOCHROME1 inverts back to the PNG
    assert np.abs(image.pixels.astype(int) - original.astype(int)).max() <= 1


@pytest.mark.parametrize("syntax", [uids.RLELossless, uids.JPEG2000Lossless], ids=lambda s: s.name)
def test_fixture_png_as_compressed_16bit_without_window(tmp_path, fixture_pngs, syntax):
    original = np.asarray(Image.open(fixture_pngs[1]).convert("L"), dtype=np.float64)
    stored = (original * 200 + 1000).astype(np.uint16)  # a detector-like 16-bit range
    image = load_image(make_dicom(tmp_path / "a.dcm", stored, syntax=syntax))
    assert image.metadata["windowing"] == "percentile"
    assert np.corrcoef(image.pixels.ravel(), original.ravel())[0, 1] > 0.99


# --- the real MONOCHROME1 JPEG 2000 CR fixture -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real(real_dicom):
    return load_image(real_dicom), pydicom.dcmread(real_dicom)


def test_real_dicom_matches_pydicoms_pipeline(real):
    image, ds = real
    assert image.pixels.shape == (ds.Rows, ds.Columns) and image.pixels.dtype == np.uint8
    reference = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) / (2**ds.BitsStored - 1)
    reference = 255 - np.rint(reference * 255)  # MONOCHROME1
    assert np.abs(image.pixels.astype(float) - reference).max() <= 1


def test_real_dicom_orientation_lungs_darker_than_mediastinum(real):
    pixels = real[0].pixels.astype(float)
    h, w = pixels.shape
    rows = slice(int(0.25 * h), int(0.50 * h))
    mediastinum = pixels[rows, int(0.46 * w) : int(0.54 * w)].mean()
    lungs = (pixels[rows, int(0.22 * w) : int(0.34 * w)].mean(), pixels[rows, int(0.66 * w) : int(0.78 * w)].mean())
    assert mediastinum > max(lungs) + 20


def test_real_dicom_metadata_and_warnings(real):
    image, _ = real
    assert image.source == "RG1_J2KI_cr_chest_monochrome1_j2k.dcm"
    assert image.view_position == "PA"
    assert image.pixel_spacing is None and "PixelSpacing is not positive: ignored" in image.warnings
    assert image.metadata == {
        "Modality": "CR",
        "BitsStored": 15,
        "PhotometricInterpretation": "MONOCHROME1",
        "TransferSyntaxUID": str(uids.JPEG2000),
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1",
        "Rows": 1955,
        "Columns": 1841,
        "BodyPartExamined": "CHEST",  # read for the input gate (cxrlm.gate)
        "ImageType": "DERIVED\\PRIMARY",
        "windowing": "window",
        "voi_applied": True,
    }


IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber",
               "InstitutionName", "ReferringPhysicianName", "StationName", "DeviceSerialNumber", "StudyDate",
               "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyID")  # fmt: skip


def test_real_dicom_identity_never_leaks(real):
    image, ds = real
    secrets = [str(ds[k].value) for k in IDENTIFYING if k in ds and len(str(ds[k].value)) >= 3]
    assert len(secrets) >= 5  # the fixture really carries identifying tags to leak
    text = repr(image) + str(image.metadata) + " ".join(image.warnings)
    assert not [s for s in secrets if s in text]
