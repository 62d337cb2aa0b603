"""Every box format round-trips through every frame: a box in original-image pixels, written as a model of that
format would write it (of the region it saw), read back by the project's parser, is the same box within rounding."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrlm import box_formats
from cxrlm.box_formats import FORMATS, FRAMES, to_view, view_region
from cxrlm.errors import ConfigError
from cxrlm.prompts.parsers import parse_boxes


def qwen_frame(width: int, height: int) -> tuple[int, int]:
    """The (width, height) Qwen2.5-VL's processor resizes an image to, at NV-Reason-CXR's pixel budget."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    rows, cols = smart_resize(height, width, factor=28, min_pixels=256 * 28 * 28, max_pixels=1024 * 28 * 28)
    return cols, rows


def tolerance(fmt, view_size: tuple[float, float], frame: tuple[int, int]) -> tuple[float, float]:
    """Half a written step, in original pixels per axis, plus Box's 0.1 px rounding."""
    units = (frame if fmt.in_pixels else (fmt.scale, fmt.scale))
    step = 10.0 ** -fmt.decimals
    return tuple(side * step / unit / 2 + 0.06 for side, unit in zip(view_size, units))


def round_trip(fmt, frame_name, image_size, fractions, input_frame=None):
    """(truth, parsed, tolerance) for a box at `fractions` of the part of the image the model saw (the image when
    padded, the crop when cropped), truth in original pixels."""
    width, height = image_size
    view = view_region(frame_name, image_size)
    region = view or (0, 0, width, height)
    seen = (max(region[0], 0), max(region[1], 0), min(region[2], width), min(region[3], height))
    truth = [seen[k % 2] + v * (seen[2 + k % 2] - seen[k % 2]) for k, v in enumerate(fractions)]
    view_size = (region[2] - region[0], region[3] - region[1])
    frame = input_frame or (round(view_size[0]), round(view_size[1]))  # a pixel format counts pixels of its input
    norm = to_view([truth[0] / width, truth[1] / height, truth[2] / width, truth[3] / height], view, image_size)
    text = fmt.write_boxes([norm], frame, "right lung")
    parsed = parse_boxes(text, image_size, input_size=frame, box_format=fmt.name, view=view)
    return truth, parsed, tolerance(fmt, view_size, frame)


sides = st.integers(64, 3000)
corner = st.floats(0.0, 0.45)
extent = st.floats(0.1, 0.5)


@pytest.mark.parametrize("frame_name", FRAMES)
@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=40, deadline=None)
@given(width=sides, aspect=st.floats(0.5, 2.0), x0=corner, y0=corner, w=extent, h=extent)
def test_every_format_round_trips_through_every_frame(name, frame_name, width, aspect, x0, y0, w, h):
    # radiograph shapes (width/height in 0.5-2, drawn, not filtered): a 2-decimal box of a 1:20 strip can vanish
    height = max(64, round(width / aspect))
    fmt = FORMATS[name]
    truth, parsed, (tol_x, tol_y) = round_trip(fmt, frame_name, (width, height), [x0, y0, x0 + w, y0 + h])
    (box,) = parsed
    assert box.label == ("right lung" if fmt.labelled else "")
    for got, want, tol in zip(box.xyxy, truth, (tol_x, tol_y, tol_x, tol_y)):
        assert got == pytest.approx(want, abs=tol)


@settings(max_examples=60, deadline=None)
@given(width=sides, height=sides, x0=corner, y0=corner, w=extent, h=extent)
def test_pixel_boxes_round_trip_through_qwens_resized_input(width, height, x0, y0, w, h):
    """Qwen2.5-VL writes pixels of its resized input: the parser maps them back to the original image."""
    frame = qwen_frame(width, height)
    truth, (box,), tol = round_trip(FORMATS["pixels"], "image", (width, height), [x0, y0, x0 + w, y0 + h], frame)
    assert box.xyxy == pytest.approx(truth, abs=max(tol))


def test_medgemma_1_5_writes_y_first_in_thousandths():
    fmt = box_formats.get("int1000_yxyx")
    assert fmt.write([0.1, 0.2, 0.5, 0.8]) == "[200, 100, 800, 500]"
    text = fmt.write_boxes([[0.1, 0.2, 0.5, 0.8]], None, "right lung")
    assert json.loads(text) == [{"box_2d": [200, 100, 800, 500], "label": "right lung"}]


def test_chexone_writes_named_corner_points():
    fmt = box_formats.get("int100_points")
    text = fmt.write_boxes([[0.12, 0.6, 0.18, 0.87], [0.5, 0.1, 0.9, 0.8]], None, "effusion")
    assert text == ("<|ref|>effusion<|/ref|><|box|>(12,60),(18,87)<|/box|>"
                    "<|ref|>effusion<|/ref|><|box|>(50,10),(90,80)<|/box|>")
    assert [b.xyxy_norm for b in parse_boxes(text, (100, 100), box_format="int100_points")] == [
        (0.12, 0.6, 0.18, 0.87), (0.5, 0.1, 0.9, 0.8)]


def test_a_fenced_medgemma_answer_is_read_y_first():
    text = 'Final Answer: ```json\n[{"box_2d": [100, 200, 300, 600], "label": "right lung"}]\n```'
    (box,) = parse_boxes(text, (1000, 500), box_format="int1000_yxyx")
    assert box.xyxy == (200.0, 50.0, 600.0, 150.0) and box.label == "right lung"


def test_whole_numbers_and_aliases():
    assert [n for n, f in FORMATS.items() if f.whole_numbers] == ["pixels", "int100", "int1000", "int1000_yxyx",
                                                                  "int100_points"]
    assert box_formats.get("qwen") is FORMATS["pixels"]
    assert not box_formats.whole_numbers("auto") and box_formats.whole_numbers("int100")


def test_unknown_names_are_one_line_config_errors():
    for call in (lambda: box_formats.get("xywh"), lambda: box_formats.check_frame("letterbox")):
        with pytest.raises(ConfigError, match="choose from"):
            call()
    assert box_formats.check("auto") == "auto"
