"""The GRPO reward library: each reward's contract, edge cases and task gating (no model, no torch)."""

import math

import pytest

from cxrlm.errors import ConfigError
from cxrlm.train import rewards as R

GOOD = "<think> The cardiac silhouette is enlarged. </think><answer> Cardiomegaly </answer>"
BOX = {"label": "right lung", "xyxy_norm": [0.1, 0.2, 0.5, 0.8]}
BOX_TEXT = '<think> right lung </think><answer> {"bbox_2d": [0.1, 0.2, 0.5, 0.8], "label": "right lung"} </answer>'


def conversational(text):
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


# ---------------------------------------------------------------- completion text


def test_completion_text_accepts_strings_and_conversations():
    assert R.completion_text(GOOD) == GOOD
    assert R.completion_text(conversational(GOOD)) == GOOD
    assert R.completion_text([{"role": "assistant", "content": GOOD}]) == GOOD
    assert R.completion_text([]) == ""


# ---------------------------------------------------------------- format


@pytest.mark.parametrize("text, expected", [
    (GOOD, 1.0),
    ("  \n" + GOOD + "\n", 1.0),
    ("", 0.0),
    ("Cardiomegaly", 0.0),
    ("<think> x </think>", 0.0),  # no answer
    ("<answer> Cardiomegaly </answer>", 0.0),  # no reasoning
    ("<think>  </think><answer> Cardiomegaly </answer>", 0.0),  # empty reasoning
    ("<think> x </think><answer>   </answer>", 0.0),  # empty answer
    ("<answer> a </answer><think> x </think>", 0.0),  # wrong order
    (GOOD + "<answer> Edema </answer>", 0.0),  # two answers
    ("<think> x <think> y </think><answer> a </answer>", 0.0),  # nested tag
    ("<think> x </think> trailing <answer> a </answer>", 0.0),  # text between blocks
    ("<think> x </think><answer> a", 0.0),  # cut off
])
def test_format_reward(text, expected):
    assert R.format_reward([text]) == [expected]


def test_format_reward_on_conversational_completions():
    assert R.format_reward([conversational(GOOD), conversational("no tags")]) == [1.0, 0.0]


def test_tag_count_gives_partial_credit():
    assert R.tag_count_reward([GOOD, "<think> x </think>", "", GOOD + "</answer>"]) == [1.0, 0.5, 0.0, 0.75]


def test_format_is_scored_for_every_task_unless_restricted():
    assert R.format_reward([GOOD, GOOD], task=["reason", "ground"]) == [1.0, 1.0]
    assert R.format_reward([GOOD, GOOD], task=["reason", "ground"], tasks=["reason"]) == [1.0, None]


# ---------------------------------------------------------------- labels


def labels_f1(texts, labels, tasks=None):
    return R.label_f1_reward(texts, labels=labels, task=tasks or ["reason"] * len(texts))


def test_label_f1_exact_partial_and_wrong():
    answer = "<think> r </think><answer> {} </answer>"
    texts = [answer.format("Cardiomegaly"), answer.format("Cardiomegaly, Edema"), answer.format("Edema")]
    assert labels_f1(texts, [["Cardiomegaly"]] * 3) == [1.0, pytest.approx(2 / 3), 0.0]


def test_label_reward_is_hard_gated_on_format():
    assert labels_f1(["Cardiomegaly", "<answer> Cardiomegaly </answer>"], [["Cardiomegaly"]] * 2) == [0.0, 0.0]


def test_label_reward_ignores_duplicates_and_penalises_unknown_items():
    dup = "<think> r </think><answer> Cardiomegaly, cardiomegaly, Cardiomegaly </answer>"
    noise = "<think> r </think><answer> Cardiomegaly, banana </answer>"
    assert labels_f1([dup, noise], [["Cardiomegaly"]] * 2) == [1.0, pytest.approx(2 / 3)]


def test_label_reward_normal_study_and_synonyms():
    normal = "<think> clear </think><answer> No Finding </answer>"
    synonym = "<think> r </think><answer> pleural effusions </answer>"
    assert labels_f1([normal, normal], [[], ["No Finding"]]) == [1.0, 1.0]
    assert labels_f1([synonym], [["Pleural Effusion"]]) == [1.0]


def test_label_jaccard():
    answer = "<think> r </think><answer> Cardiomegaly, Edema </answer>"
    assert R.label_jaccard_reward([answer], labels=[["Cardiomegaly", "Atelectasis"]], task=["reason"]) == [
        pytest.approx(1 / 3)
    ]


def test_label_reward_skips_other_tasks_and_rows_without_truth():
    assert labels_f1([GOOD, GOOD, GOOD], [["Cardiomegaly"], None, ["Edema"]], ["ground", "reason", "reason"]) == [
        None, None, 0.0
    ]


def test_label_reward_without_task_column_scores_every_row():
    assert R.label_f1_reward([GOOD], labels=[["Cardiomegaly"]]) == [1.0]


# ---------------------------------------------------------------- boxes


def boxes(texts, refs, images=None, tasks=None, reward=R.box_iou_reward):
    return reward(texts, boxes=refs, images=images or [[]] * len(texts), task=tasks or ["ground"] * len(texts))


def test_box_iou_exact_and_missing():
    assert boxes([BOX_TEXT, "<answer> none </answer>", ""], [[BOX]] * 3) == [1.0, 0.0, 0.0]


def test_box_iou_out_of_range_boxes_are_clipped_not_errors():
    text = "<answer> [-0.5, -0.5, 0.5, 0.8] </answer>"  # clipped to [0, 0, 0.5, 0.8]
    ref = [{"label": "x", "xyxy_norm": [0.0, 0.0, 0.5, 0.8]}]
    assert boxes([text, "<answer> [5, 5, 9, 9] </answer>"], [ref, ref]) == [1.0, 0.0]


def test_box_extra_predictions_cost():
    text = BOX_TEXT + " [0.6, 0.6, 0.9, 0.9]"
    assert boxes([text], [[BOX]]) == [0.5]
    assert boxes([text], [[BOX]], reward=R.box_f1_reward) == [pytest.approx(2 / 3)]


def test_box_pixel_references_use_the_image_size(tmp_path):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("L", (200, 100)).save(image)
    ref = [{"label": "x", "xyxy": [20, 20, 100, 80]}]
    pixels = "<answer> [20, 20, 100, 80] </answer>"
    assert boxes([pixels], [ref], images=[[str(image)]]) == [1.0]
    assert boxes([pixels], [ref], images=[[]]) == [None]  # a pixel box without an image cannot be scored


def test_box_reward_skips_other_tasks_and_empty_truth():
    assert boxes([BOX_TEXT, BOX_TEXT], [[BOX], None], tasks=["reason", "ground"]) == [None, None]
    assert boxes(["<answer> no box </answer>"], [[]]) == [1.0]  # nothing to find, nothing found


# ---------------------------------------------------------------- report CE-F1


def test_report_ce_f1():
    report = "Findings: The heart is enlarged. Impression: Cardiomegaly."
    texts = ["<answer>Findings: Enlarged heart. Impression: Cardiomegaly.</answer>",
             "<answer>The lungs are clear. No acute abnormality.</answer>", "anything", ""]
    out = R.report_ce_f1_reward(texts, report=[report, report, None, report], task=["report", "report", "report",
                                                                                     "report"])
    assert out[0] == 1.0 and out[1] == 0.0 and out[2] is None and out[3] == 0.0


def test_report_ce_f1_normal_vs_normal_is_one_and_other_tasks_none():
    normal = "The lungs are clear. No pleural effusion or pneumothorax."
    assert R.report_ce_f1_reward([normal, normal], report=[normal, normal], task=["report", "reason"]) == [1.0, None]


# ---------------------------------------------------------------- length and repetition


def test_length_reward_soft_bounds():
    out = R.length_reward(["w " * 50, "w " * 2, "w " * 600, "w " * 1000, ""], min_length=8, max_length=512,
                          buffer=128)
    assert out[0] == 0.0
    assert -1.0 < out[1] < 0.0
    assert out[2] == pytest.approx(-88 / 128)
    assert out[3] == -1.0 and out[4] == -1.0


def test_length_reward_prefers_token_ids():
    assert R.length_reward(["one word"], completion_ids=[[1] * 600], max_length=512, buffer=88) == [-1.0]


def test_repetition_penalty():
    out = R.repetition_reward(["a b c a b c a b c a b c", "one two three four five", "", "a b"])
    assert out[0] < -0.5 and out[1] == 0.0 and out[2] == 0.0 and out[3] == 0.0


# ---------------------------------------------------------------- registry


def test_every_registered_reward_honours_the_contract():
    texts = [GOOD, conversational(BOX_TEXT), ""]
    columns = {"task": ["reason", "ground", "report"], "labels": [["Cardiomegaly"], None, None],
                   "boxes": [None, [BOX], None], "report": [None, None, "Cardiomegaly."], "images": [[], [], []],
                   "prompts": ["p"] * 3, "completion_ids": [[1, 2]] * 3, "trainer_state": None}
    for name in R.REWARDS:
        out = R.get_reward(name)(texts, **columns)
        assert len(out) == 3, name
        assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in out), (name, out)


def test_get_reward_binds_settings_and_keeps_the_name():
    reward = R.get_reward("length", max_length=2, buffer=1)
    assert reward.__name__ == "length"
    assert reward(["a b c d"]) == [-1.0]


def test_get_reward_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown reward 'formatt'"):
        R.get_reward("formatt")
    with pytest.raises(ConfigError, match="no setting 'max_len'"):
        R.get_reward("length", max_len=3)


# ---------------------------------------------------------------- short answers


def test_answer_match_yes_no_and_text():
    texts = ["<think> r </think><answer> Yes. </answer>", "<answer>no</answer>", "<answer>Left lower lobe</answer>",
             "<answer>right</answer>", ""]
    out = R.answer_match_reward(texts, answer=["yes", "Yes", "left lower lobe.", "left", "yes"],
                                task=["classify", "classify", "vqa", "vqa", "classify"])
    assert out == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_answer_match_skips_other_tasks_and_missing_answers():
    assert R.answer_match_reward(["<answer>yes</answer>"] * 2, answer=["yes", None], task=["reason", "vqa"]) == [
        None, None
    ]


def test_box_reward_uses_the_recorded_image_size():
    ref = [{"label": "x", "xyxy": [20, 20, 100, 80]}]
    out = R.box_iou_reward(["<answer> [20, 20, 100, 80] </answer>"], boxes=[ref], images=[[]], image_size=[[200, 100]],
                           task=["ground"])
    assert out == [1.0]


def test_box_reward_reads_the_rows_box_format():
    """A policy trained on 0-100 boxes writes them; the dataset's `box_format` column says so (a guess would take
    them for pixels), and a recipe's `box_format` setting overrides the column."""
    ref = [{"label": "x", "xyxy": [20, 20, 100, 80]}]
    text = ["<answer> [10, 20, 50, 80] </answer>"]
    columns = dict(boxes=[ref], images=[[]], image_size=[[200, 100]], task=["ground"])
    assert R.box_iou_reward(text, **columns) != [1.0]
    assert R.box_iou_reward(text, box_format=["int100"], **columns) == [1.0]
    assert R.box_f1_reward(text, box_format=[None], **columns) != [1.0]
    assert R.get_reward("box_iou", box_format="int100")(text, **columns) == [1.0]
    assert R.get_reward("box_iou", box_format="norm1")(text, **{**columns, "box_format": ["int100"]}) != [1.0]
