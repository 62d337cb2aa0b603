"""Training JSONL reading: image paths, bad rows and the batch-time image loading collator."""

import json

import pytest
from train_samples import write_grpo, write_png, write_sft

from cxrlm.errors import InputError
from cxrlm.train.data import GRPO_COLUMNS, SFT_COLUMNS, ImageLoadingCollator, read_dataset, read_jsonl


def test_reads_sft_rows_with_absolute_image_paths(tmp_path):
    rows = read_jsonl(write_sft(tmp_path, n=3), SFT_COLUMNS)
    assert len(rows) == 3 and rows[0]["images"] == [str(tmp_path / "sft0.png")]
    assert read_jsonl(write_sft(tmp_path, n=3), SFT_COLUMNS, max_samples=2)[-1]["images"][0].endswith("sft1.png")


def test_grpo_rows_keep_their_ground_truth_columns(tmp_path):
    dataset = read_dataset(write_grpo(tmp_path, n=3), GRPO_COLUMNS)
    assert dataset["task"] == ["reason", "ground", "report"]
    assert dataset[0]["labels"] == ["Cardiomegaly"] and dataset[1]["boxes"][0]["xyxy_norm"] == [0.1, 0.2, 0.5, 0.8]


@pytest.mark.parametrize("line, message", [
    ("{not json", r"rows.jsonl:1 is not valid JSON"),
    ('{"images": []}', r"has no 'messages' column: is this a SFT"),
    ('{"messages": [], "images": ["missing.png"]}', "image missing.png not found"),
])
def test_bad_rows_are_one_line_errors(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match=message):
        read_jsonl(path, SFT_COLUMNS)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_jsonl(tmp_path / "none.jsonl", SFT_COLUMNS)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="has no rows"):
        read_jsonl(tmp_path / "empty.jsonl", SFT_COLUMNS)


def test_collator_loads_images_as_rgb_pil(tmp_path):
    image = tmp_path / write_png(tmp_path / "a.png", 0, size=(40, 30))
    seen = []
    collate = ImageLoadingCollator(lambda examples: seen.extend(examples) or "batch")
    assert collate([{"images": [str(image)], "task": "reason"}, {"images": []}]) == "batch"
    assert seen[0]["images"][0].mode == "RGB" and seen[0]["images"][0].size == (40, 30)
    assert seen[0]["task"] == "reason" and seen[1]["images"] == []


def test_relative_paths_resolve_against_the_jsonl_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "x.png", 0)
    path = tmp_path / "sub" / "rows.jsonl"
    path.write_text(json.dumps({"prompt": [], "images": ["x.png"]}) + "\n")
    assert read_jsonl(path, GRPO_COLUMNS)[0]["images"] == [str(tmp_path / "sub" / "x.png")]
