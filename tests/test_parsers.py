from hypothesis import given
from hypothesis import strategies as st

from cxrlm.pathologies import CHEXPERT14
from cxrlm.prompts import parsers


def test_reasoning_and_answer():
    out = parsers.split_reasoning("<think>Lungs: opacity at right base.</think>\n<answer>Pneumonia, Pleural Effusion</answer>")
    assert out.reasoning == "Lungs: opacity at right base."
    assert out.answer == "Pneumonia, Pleural Effusion"
    assert out.warnings == []
    assert parsers.parse_labels(out.answer) == (["Pneumonia", "Pleural Effusion"], [])


def test_unclosed_think_is_truncated_reasoning():
    out = parsers.split_reasoning("<think>Heart size normal. Lungs")
    assert out.reasoning == "Heart size normal. Lungs"
    assert out.answer == ""
    assert any("cut off" in w for w in out.warnings)


def test_missing_answer_tag_reads_text_after_think():
    out = parsers.split_reasoning("<think>review</think> Cardiomegaly, edema")
    assert parsers.parse_labels(out.answer)[0] == ["Cardiomegaly", "Edema"]
    assert any("no <answer>" in w for w in out.warnings)


def test_no_tags_at_all():
    out = parsers.split_reasoning("Cardiomegaly")
    assert out.reasoning is None and out.answer == "Cardiomegaly"


def test_unclosed_answer():
    out = parsers.split_reasoning("<think>x</think><answer>Atelectasis, Pneumoth")
    assert any("</answer>" in w for w in out.warnings)
    labels, _unknown = parsers.parse_labels(out.answer)
    assert "Atelectasis" in labels


def test_labels_misspelled_plural_nih_and_unknown():
    labels, unknown = parsers.parse_labels("Cardiomegally; pleural effusions, Infiltration, Mass, Nodule, banana")
    assert labels == ["Cardiomegaly", "Pleural Effusion", "Lung Opacity", "Lung Lesion"]
    assert unknown == ["banana"]


def test_labels_dedup_and_no_finding_overridden():
    assert parsers.parse_labels("No Finding, Edema, edema")[0] == ["Edema"]
    assert parsers.parse_labels("No Finding")[0] == ["No Finding"]
    assert parsers.parse_labels("")[0] == []


def test_boxes_normalized_int100_and_pixels():
    size = (1000, 500)
    (b,) = parsers.parse_boxes("right lung [0.1, 0.2, 0.5, 0.8]", size, default_label="right lung")
    assert b.xyxy == (100.0, 100.0, 500.0, 400.0) and b.label == "right lung"
    (b,) = parsers.parse_boxes("[10, 20, 50, 80]", size, box_format="int100")
    assert b.xyxy == (100.0, 100.0, 500.0, 400.0)
    # Qwen2.5-VL writes pixels of its resized input (here 500x250): map back to the original 1000x500.
    (b,) = parsers.parse_boxes('{"bbox_2d": [50, 25, 250, 200], "label": "effusion"}', size, input_size=(500, 250))
    assert b.xyxy == (100.0, 50.0, 500.0, 400.0) and b.label == "effusion"


def test_boxes_out_of_range_are_clipped_and_degenerate_dropped():
    (b,) = parsers.parse_boxes("[-0.2, 0.1, 1.4, 0.9]", (100, 100), box_format="norm1")
    assert b.xyxy_norm == (0.0, 0.1, 1.0, 0.9)
    assert parsers.parse_boxes("[0.5, 0.5, 0.5, 0.9]", (100, 100)) == []
    assert parsers.parse_boxes("[1, 2, 3]", (100, 100)) == []


def test_swapped_corners_are_sorted():
    (b,) = parsers.parse_boxes("[0.8, 0.9, 0.2, 0.1]", (10, 10))
    assert b.xyxy_norm == (0.2, 0.1, 0.8, 0.9)


def test_report_sections():
    assert parsers.parse_report("FINDINGS: Clear lungs.\nIMPRESSION: Normal.") == ("Clear lungs.", "Normal.")
    assert parsers.parse_report("Clear lungs.") == ("Clear lungs.", None)
    assert parsers.parse_report("Impression: Normal.") == (None, "Normal.")
    assert parsers.parse_report("") == (None, None)


def test_lists_and_yes_no():
    assert parsers.parse_list("1. Pneumonia\n2) Edema\n- Atelectasis") == ["Pneumonia", "Edema", "Atelectasis"]
    assert parsers.parse_list("Pneumonia, edema.") == ["Pneumonia", "edema"]
    assert parsers.parse_yes_no("Yes, there is") is True
    assert parsers.parse_yes_no(" no.") is False
    assert parsers.parse_yes_no("maybe") is None


@given(st.text(max_size=400))
def test_parsers_never_raise(text):
    split = parsers.split_reasoning(text)
    labels, _ = parsers.parse_labels(split.answer)
    assert set(labels) <= set(CHEXPERT14)
    for box in parsers.parse_boxes(text, (640, 480)):
        assert 0 <= box.xyxy[0] < box.xyxy[2] <= 640 and 0 <= box.xyxy[1] < box.xyxy[3] <= 480
    parsers.parse_report(text)
    parsers.parse_list(text)


@given(st.lists(st.sampled_from(CHEXPERT14), min_size=1, max_size=6, unique=True), st.booleans())
def test_well_formed_answers_round_trip(names, truncate):
    text = f"<think>systematic review</think><answer>{', '.join(names)}</answer>"
    if truncate:
        text = text[: -len("</answer>")]
    labels, unknown = parsers.parse_labels(parsers.split_reasoning(text).answer)
    expected = [n for n in names if n != "No Finding"] if len(names) > 1 else names
    assert labels == expected and unknown == []


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=4, max_size=4))
def test_normalized_boxes_map_into_image(values):
    text = "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
    for box in parsers.parse_boxes(text, (300, 200), box_format="norm1"):
        assert box.xyxy[2] <= 300 and box.xyxy[3] <= 200


# --- box formats and frames of the other families (tests/test_model_families.py runs them end to end) ---

def test_int1000_boxes_are_thousandths_of_the_image():
    from cxrlm.prompts.parsers import parse_boxes

    (box,) = parse_boxes('{"bbox_2d": [250, 100, 750, 900]}', (400, 1000), box_format="int1000")
    assert box.xyxy == (100.0, 100.0, 300.0, 900.0)


def test_norm1_two_decimal_boxes_and_out_of_range_values_are_clipped():
    from cxrlm.prompts.parsers import parse_boxes

    boxes = parse_boxes("[0.12, 0.30, 0.45, 0.80] and [0.9, 0.9, 1.2, 1.5]", (200, 100), box_format="norm1")
    assert [b.xyxy for b in boxes] == [(24.0, 30.0, 90.0, 80.0), (180.0, 90.0, 200.0, 100.0)]


def test_int100_degenerate_box_is_dropped():
    from cxrlm.prompts.parsers import parse_boxes

    assert parse_boxes("[40, 40, 40, 90]", (100, 100), box_format="int100") == []


def test_unknown_box_format_raises():
    import pytest

    from cxrlm.prompts.parsers import parse_boxes

    with pytest.raises(ValueError, match="unknown box format"):
        parse_boxes("[1, 2, 3, 4]", (10, 10), box_format="int10")


def test_padded_square_coordinates_map_back_to_the_image():
    from cxrlm.box_formats import view_region
    from cxrlm.prompts.parsers import parse_boxes

    # A 240x300 portrait radiograph centred on a 300x300 square: 30 px of padding left and right.
    view = view_region("square_pad", (240, 300))
    assert view == (-30.0, 0.0, 270.0, 300.0)
    (box,) = parse_boxes("[0.2, 0.5, 0.5, 1.0]", (240, 300), box_format="norm1", view=view)
    assert box.xyxy == (30.0, 150.0, 120.0, 300.0)


def test_center_crop_coordinates_map_back_to_the_image():
    import pytest

    from cxrlm.box_formats import view_region
    from cxrlm.prompts.parsers import parse_boxes

    view = view_region("center_crop", (240, 300))  # the middle 240x240 square
    assert view == (0.0, 30.0, 240.0, 270.0)
    (box,) = parse_boxes("[0, 0, 50, 50]", (240, 300), box_format="int100", view=view)
    assert box.xyxy == (0.0, 30.0, 120.0, 150.0)
    assert view_region("image", (240, 300)) is None
    with pytest.raises(ValueError):
        view_region("letterbox", (240, 300))


def test_list_of_blank_text_is_empty():
    assert parsers.parse_list("\n\n \n") == []
    assert parsers.parse_list(" ., \n") == []
