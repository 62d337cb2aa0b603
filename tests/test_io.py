"""cxrlm.io.load_image / load_study for ordinary image files: content sniffing, grayscale conversion with exact
pixel values, views, studies, and every bad input turned into a one-line InputError."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cxrlm.errors import InputError
from cxrlm.io import load_image, load_study
from cxrlm.io.image import LATERAL_WARNING
from cxrlm.types import Study

GRAY = np.array([[0, 1, 127, 128], [200, 254, 255, 42]], dtype=np.uint8)


def save(path, array_or_image, **kw):
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    im.save(path, **kw)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width, height) -> bytes:
    """A valid PNG header for a huge 8-bit gray image with almost no data: small on disk, huge if decoded."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")


def error_of(path, **kw) -> str:
    with pytest.raises(InputError) as info:
        load_image(path, **kw)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# --- formats and pixel values ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_lossless_8bit_gray_is_exact(tmp_path, suffix):
    image = load_image(save(tmp_path / f"x{suffix}", GRAY))
    assert image.pixels.dtype == np.uint8 and (image.pixels == GRAY).all()
    assert image.source == f"x{suffix}" and image.warnings == [] and image.view_position is None
    assert image.size == (4, 2)


def test_jpeg_is_close(tmp_path):
    smooth = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    image = load_image(save(tmp_path / "x.jpg", smooth, quality=95))
    assert image.metadata == {"format": "JPEG", "mode": "L"}
    assert np.abs(image.pixels.astype(int) - smooth).max() <= 3


def test_gray_stored_as_rgb_has_no_warning(tmp_path):
    image = load_image(save(tmp_path / "x.png", np.stack([GRAY] * 3, axis=-1)))
    assert (image.pixels == GRAY).all() and image.warnings == []


def test_color_image_is_converted_with_itu601_weights(tmp_path):
    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, 0, 0], rgb[0, 1, 1], rgb[0, 2, 2] = 255, 255, 255  # pure red, green, blue
    image = load_image(save(tmp_path / "x.png", rgb))
    assert image.pixels[0].tolist() == [76, 150, 29]  # 0.299, 0.587, 0.114 of 255
    assert image.warnings == ["color image converted to grayscale"]


def test_rgba_and_palette_become_gray(tmp_path):
    rgba = np.dstack([GRAY, GRAY, GRAY, np.full_like(GRAY, 255)])
    assert (load_image(save(tmp_path / "a.png", rgba)).pixels == GRAY).all()
    palette = Image.fromarray(GRAY).convert("P")
    assert (load_image(save(tmp_path / "p.png", palette)).pixels == GRAY).all()


def test_16bit_png_is_stretched_over_its_actual_range(tmp_path):
    arr = np.array([[1000, 2000, 3000, 1500]], dtype=np.uint16)  # 12-bit-like data in a 16-bit file
    image = load_image(save(tmp_path / "x.png", arr))
    assert image.pixels[0].tolist() == [0, 128, 255, 64]  # (x - 1000) / 2000 x 255, rounded


def test_16bit_and_float_tiff(tmp_path):
    arr = np.array([[0, 65535, 32768]], dtype=np.uint16)
    assert load_image(save(tmp_path / "a.tif", arr)).pixels[0].tolist() == [0, 255, 128]
    floats = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    assert load_image(save(tmp_path / "f.tif", Image.fromarray(floats, "F"))).pixels[0].tolist() == [0, 128, 255]


def test_flat_16bit_image_warns(tmp_path):
    image = load_image(save(tmp_path / "x.png", np.full((3, 3), 500, dtype=np.uint16)))
    assert not image.pixels.any() and image.warnings == ["image has a single gray level"]


def test_exif_rotation_is_applied(tmp_path):
    im = Image.fromarray(np.zeros((10, 30), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image = load_image(save(tmp_path / "x.jpg", im, exif=exif))
    assert image.pixels.shape == (30, 10)


def test_format_is_sniffed_from_content_not_extension(tmp_path):
    image = load_image(save(tmp_path / "really_a_png.dcm", GRAY, format="PNG"))
    assert (image.pixels == GRAY).all() and image.metadata["format"] == "PNG"


def test_fixture_pngs_load_exactly(fixture_pngs):
    assert fixture_pngs
    for path in fixture_pngs:
        image = load_image(path)
        assert (image.pixels == np.asarray(Image.open(path).convert("L"))).all()
        assert image.source == path.name


# --- views and studies ---------------------------------------------------------------------------------------


def test_view_argument_is_normalized_and_lateral_warns(tmp_path):
    path = save(tmp_path / "x.png", GRAY)
    assert load_image(path, view_position=" pa ").view_position == "PA"
    lateral = load_image(path, view_position="lat")
    assert lateral.view_position == "LATERAL" and lateral.warnings == [LATERAL_WARNING]
    assert "view PA" not in error_of(path, view_position="oblique")
    assert "unknown view position 'oblique'" in error_of(path, view_position="oblique")


def test_study_with_frontal_drops_the_lateral_warning(tmp_path):
    a, b = save(tmp_path / "pa.png", GRAY), save(tmp_path / "ll.png", GRAY)
    study = load_study([a, b], view_positions=["PA", "LL"])
    assert isinstance(study, Study) and [i.view_position for i in study.images] == ["PA", "LL"]
    assert all(i.warnings == [] for i in study.images)
    lateral_only = load_study([b], view_positions=["LL"])
    assert lateral_only.images[0].warnings == [LATERAL_WARNING]
    assert load_study([a, b]).images[1].view_position is None


def test_study_errors(tmp_path):
    path = save(tmp_path / "x.png", GRAY)
    with pytest.raises(InputError, match="at least one"):
        load_study([])
    with pytest.raises(InputError, match="1 view positions given for 2 images"):
        load_study([path, path], view_positions=["PA"])
    with pytest.raises(InputError, match="no such file"):
        load_study([path, tmp_path / "missing.png"])


# --- bad inputs ------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert "no such file" in error_of(tmp_path / "nope.png")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty.png is empty" in error_of(tmp_path / "empty.png")


def test_directory(tmp_path):
    assert "is a directory" in error_of(tmp_path)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif")])
def test_truncated_image(tmp_path, fmt, suffix):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    path = save(tmp_path / f"x{suffix}", noise, format=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated or corrupt" in error_of(path)


def test_corrupt_png_checksum(tmp_path):
    path = save(tmp_path / "x.png", np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert "truncated or corrupt" in error_of(path)


@pytest.mark.parametrize("name", ["notes.png", "notes.dcm", "notes.jpg"])
def test_text_with_image_extension(tmp_path, name):
    (tmp_path / name).write_text("Patient Doe Jane, DOB 1941-08-07: no acute process.\n")
    message = error_of(tmp_path / name)
    assert "is not a PNG, JPEG, TIFF or DICOM file" in message and "Doe" not in message


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(8000, 8000))  # 64 M pixels, under Pillow's own limit, over ours
    message = error_of(path)
    assert "64,000,000 pixels exceeds max_pixels=50,000,000" in message  # not "truncated": never decoded
    assert "4x2 = 8 pixels exceeds max_pixels=7" in error_of(save(tmp_path / "small.png", GRAY), max_pixels=7)


def test_giant_header_beyond_pillows_limit(tmp_path):
    path = tmp_path / "giant.png"
    path.write_bytes(bomb_png(30000, 30000))
    # Pillow refuses 900 M pixels itself when opening, before our check can run: still one InputError line
    assert "giant.png: image is too large to decode safely" in error_of(path, max_pixels=10**9)


def test_multipage_tiff_is_refused(tmp_path):
    pages = [Image.fromarray(GRAY), Image.fromarray(255 - GRAY)]
    path = tmp_path / "x.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert "2 frames/pages" in error_of(path)


def test_max_pixels_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        load_image(save(tmp_path / "x.png", GRAY), max_pixels=0)


def test_load_image_bytes_reads_a_file_in_memory_as_load_image_reads_it(tmp_path):
    """The server's uploads: decoded from memory, never written (issue 33 case 2); DICOM's deflate bound included."""
    import pydicom.uid as uids

    from cxrlm.io.image import load_image_bytes
    from tests.test_io_hardening import BASE, dicom_dataset, write

    png = tmp_path / "a.png"
    Image.fromarray(BASE).save(png)
    ds = dicom_dataset(BASE)
    ds.file_meta.TransferSyntaxUID = uids.DeflatedExplicitVRLittleEndian
    for path in (png, write(tmp_path, ds)):
        image = load_image_bytes(path.read_bytes(), "the upload")
        assert np.array_equal(image.pixels, load_image(path).pixels) and image.source == "the upload"
    ds.PixelData = bytes(2**24)  # 16 MB of zeros: 16 KB deflated
    with pytest.raises(InputError, match="^the upload: the deflated dataset inflates to more than"):
        load_image_bytes(write(tmp_path, ds).read_bytes(), "the upload", max_pixels=4000)
    with pytest.raises(InputError, match="^the upload is not a PNG, JPEG, TIFF or DICOM file"):
        load_image_bytes(b"hello", "the upload")
