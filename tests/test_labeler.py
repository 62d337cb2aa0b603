"""Tests of the rule-based report labeler (cxrlm.data.labeler) and of `cxrlm label`."""

import csv
import json
import re
from argparse import ArgumentParser
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxrlm.data import labeler
from cxrlm.data.labeler import NEGATIVE, POSITIVE, UNCERTAIN, explain, label_report, label_reports
from cxrlm.errors import ConfigError, InputError
from cxrlm.pathologies import CHEXPERT14, NIH14


def nih(text, **kwargs):
    return label_report(text, vocab="nih14", **kwargs)


def chx(text, **kwargs):
    return label_report(text, vocab="chexpert14", **kwargs)


# ---------------------------------------------------------------- negation


@pytest.mark.parametrize(
    "text, label",
    [
        ("No pneumothorax.", "Pneumothorax"),
        ("There is no evidence of pneumothorax.", "Pneumothorax"),
        ("Lungs are clear without effusion.", "Effusion"),
        ("Negative for pneumothorax.", "Pneumothorax"),
        ("The lungs are free of consolidation.", "Consolidation"),
        ("Pneumothorax is not seen.", "Pneumothorax"),
        ("No pneumothorax is identified.", "Pneumothorax"),
        ("The previously seen left effusion has resolved.", "Effusion"),
        ("Interval resolution of the right pleural effusion.", "Effusion"),
        ("Resolved left lower lobe pneumonia.", "Pneumonia"),
        ("No definite pleural effusion.", "Effusion"),
        ("Pneumothorax: none.", "Pneumothorax"),
        ("No XXXX infiltrates.", "Infiltration"),
        ("No new consolidation.", "Consolidation"),
        ("Pneumonia is unlikely.", "Pneumonia"),
        ("There is no\npneumothorax.", "Pneumothorax"),
        ("Near complete resolution of the left effusion.", "Effusion"),
        ("The previously described nodule is no longer visualized.", "Nodule"),
    ],
)
def test_negation(text, label):
    assert nih(text)[label] == NEGATIVE


@pytest.mark.parametrize(
    "text",
    [
        "No pneumothorax, pleural effusion, or focal consolidation.",
        "No evidence of pneumothorax, consolidation or pleural effusion.",
        "There is no focal airspace consolidation, large pleural effusion or pneumothorax.",
        "The lungs are clear without focal consolidation, effusion, pneumothorax.",
        "Pleural effusion, pneumothorax, or consolidation is not seen.",
    ],
)
def test_negation_scopes_over_coordinated_lists(text):
    labels = nih(text)
    assert labels["Pneumothorax"] == labels["Effusion"] == labels["Consolidation"] == NEGATIVE


@pytest.mark.parametrize(
    "text",
    [
        "No pneumothorax, but there is a small left effusion.",
        "No pneumothorax; small left effusion.",
        "Small left effusion without pneumothorax.",
        "No pneumothorax. Small left effusion.",
        "No pneumothorax, small left effusion.",
        "No pneumothorax, stable small left effusion.",
        "No pneumothorax is seen and there is a small left effusion.",
        "There is no evidence of a pneumothorax, and the small left effusion is unchanged.",
    ],
)
def test_negation_stops_at_clause_boundaries(text):
    labels = nih(text)
    assert labels["Pneumothorax"] == NEGATIVE
    assert labels["Effusion"] == POSITIVE


def test_backward_negation_does_not_cross_an_unlisted_comma():
    labels = nih("Right lower lobe pneumonia, effusion not seen.")
    assert labels["Pneumonia"] == POSITIVE
    assert labels["Effusion"] == NEGATIVE


def test_negation_outranks_a_hedge_inside_its_scope():
    assert nih("There is no focal air space opacity to suggest a pneumonia.")["Pneumonia"] == NEGATIVE
    assert nih("No opacity suggestive of pneumonia.")["Pneumonia"] == NEGATIVE


# ---------------------------------------------------------------- uncertainty


@pytest.mark.parametrize(
    "text, label",
    [
        ("Cannot exclude a small left pleural effusion.", "Effusion"),
        ("A small effusion cannot be excluded.", "Effusion"),
        ("Possible right lower lobe pneumonia.", "Pneumonia"),
        ("Findings may represent atelectasis.", "Atelectasis"),
        ("Opacity suggestive of pneumonia.", "Pneumonia"),
        ("Questionable small nodule.", "Nodule"),
        ("Suspicious for pneumonia.", "Pneumonia"),
        ("Concerning for pneumonia.", "Pneumonia"),
        ("Pneumonia is not excluded.", "Pneumonia"),
        ("Differential diagnosis includes edema.", "Edema"),
        ("Rule out pneumonia.", "Pneumonia"),
        ("Pleural effusion?", "Effusion"),
        ("Small bilateral effusions suspected.", "Effusion"),
        ("Opacity may be due to atelectasis.", "Atelectasis"),
    ],
)
def test_uncertainty(text, label):
    assert nih(text)[label] == UNCERTAIN


def test_versus_hedges_the_alternatives_after_it():
    # "A versus B" names A as the leading consideration and B as a differential.
    labels = nih("Left basilar atelectasis versus pneumonia.")
    assert labels["Atelectasis"] == POSITIVE
    assert labels["Pneumonia"] == UNCERTAIN
    assert nih("Atelectasis vs. pneumonia.")["Pneumonia"] == UNCERTAIN


def test_a_preceding_hedge_covers_both_alternatives():
    labels = nih("Right basilar opacity may represent atelectasis versus pneumonia.")
    assert labels["Atelectasis"] == labels["Pneumonia"] == UNCERTAIN


@pytest.mark.parametrize(
    "text", ["Likely atelectasis.", "Findings consistent with atelectasis.", "Probable atelectasis."]
)
def test_high_confidence_hedges_are_positive(text):
    assert nih(text)["Atelectasis"] == POSITIVE


def test_a_new_hedge_ends_a_negation():
    labels = nih("No pneumothorax, possible small effusion.")
    assert labels["Pneumothorax"] == NEGATIVE
    assert labels["Effusion"] == UNCERTAIN


# ---------------------------------------------------------------- stability phrases and special cases


@pytest.mark.parametrize(
    "text, label",
    [
        ("No change in the small left pleural effusion.", "Effusion"),
        ("No interval change in cardiomegaly.", "Cardiomegaly"),
        ("No significant change in bibasilar atelectasis since the prior study.", "Atelectasis"),
        ("No increase in the size of the left effusion.", "Effusion"),
        ("Unchanged moderate cardiomegaly.", "Cardiomegaly"),
        ("Stable left basilar atelectasis.", "Atelectasis"),
        ("Left effusion, not significantly changed.", "Effusion"),
        ("Right lower lobe pneumonia has not resolved.", "Pneumonia"),
        ("Partial resolution of the left effusion.", "Effusion"),
        ("The left effusion has partially resolved.", "Effusion"),
        ("Resolving right lower lobe pneumonia.", "Pneumonia"),
    ],
)
def test_stability_phrases_are_not_negations(text, label):
    assert nih(text)[label] == POSITIVE


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Heart size is normal.", NEGATIVE),
        ("Normal heart size.", NEGATIVE),
        ("The heart is not enlarged.", NEGATIVE),
        ("The heart is not significantly enlarged.", NEGATIVE),
        ("The cardiac silhouette is within normal limits.", NEGATIVE),
        ("The heart, pulmonary XXXX and mediastinum are within normal limits.", NEGATIVE),
        ("Heart size is at the upper limits of normal.", NEGATIVE),
        ("No cardiomegaly.", NEGATIVE),
        ("Cardiomegaly.", POSITIVE),
        ("The heart is mildly enlarged.", POSITIVE),
        ("Enlarged cardiac silhouette.", POSITIVE),
        ("Heart size XXXX enlarged.", POSITIVE),
        ("Borderline cardiomegaly.", POSITIVE),
        ("Borderline heart size.", POSITIVE),
        ("Heart size is borderline enlarged for technique.", POSITIVE),
        ("Interval increase in heart size.", POSITIVE),
        ("Possible cardiomegaly.", UNCERTAIN),
    ],
)
def test_heart_size(text, expected):
    assert nih(text)["Cardiomegaly"] == expected


def test_deidentification_mask_is_an_ordinary_word():
    assert nih("XXXX basilar atelectasis.")["Atelectasis"] == POSITIVE
    assert nih("XXXX XXXX XXXX.")["normal"] == POSITIVE


@pytest.mark.parametrize(
    "text, label, expected",
    [
        ("Subcutaneous emphysema in the left chest wall.", "Emphysema", None),
        ("Cystic fibrosis.", "Fibrosis", None),
        ("Hiatal hernia.", "Hernia", POSITIVE),
        ("Pericardial effusion.", "Effusion", POSITIVE),
        ("Vertebral body compression collapse.", "Atelectasis", None),
        ("Large left hydropneumothorax.", "Pneumothorax", POSITIVE),
        ("Large left hydropneumothorax.", "Effusion", POSITIVE),
        ("Pleural thickening at the left apex.", "Pleural_Thickening", POSITIVE),
        ("Nodular opacity in the right upper lobe.", "Nodule", None),
        ("A 2 cm nodule in the right upper lobe.", "Nodule", POSITIVE),
        ("Right upper lobe mass.", "Mass", POSITIVE),
        ("No mass effect.", "Mass", None),
    ],
)
def test_nih_mentions(text, label, expected):
    assert nih(text)[label] == expected


@pytest.mark.parametrize(
    "text, label, expected",
    [
        ("Pericardial effusion.", "Pleural Effusion", None),
        ("Nodular opacity in the right upper lobe.", "Lung Lesion", POSITIVE),
        ("Right upper lobe mass.", "Lung Lesion", POSITIVE),
        ("Patchy right basilar infiltrate.", "Lung Opacity", POSITIVE),
        ("The lungs are clear.", "Lung Opacity", NEGATIVE),
        ("Widened mediastinum.", "Enlarged Cardiomediastinum", POSITIVE),
        ("Normal mediastinal contours.", "Enlarged Cardiomediastinum", NEGATIVE),
        ("Endotracheal tube 4 cm above the carina.", "Support Devices", POSITIVE),
        ("Right IJ central venous catheter with tip in the SVC.", "Support Devices", POSITIVE),
        ("Left chest wall pacemaker with leads in the right heart.", "Support Devices", POSITIVE),
        ("The endotracheal tube has been removed.", "Support Devices", NEGATIVE),
        ("Healed left rib fractures.", "Fracture", POSITIVE),
        ("No acute fracture.", "Fracture", NEGATIVE),
        ("Apical pleural thickening.", "Pleural Other", POSITIVE),
        ("Hiatal hernia.", "No Finding", POSITIVE),  # CheXpert 14 has no hernia label
    ],
)
def test_chexpert_mentions(text, label, expected):
    assert chx(text)[label] == expected


# ---------------------------------------------------------------- sections


def test_only_findings_and_impression_are_labeled():
    text = (
        "EXAMINATION: Chest PA and lateral\nINDICATION: Cough, fever, rule out pneumonia.\n"
        "COMPARISON: None.\n\nFINDINGS: Heart size is normal. No focal consolidation.\n"
        "IMPRESSION: No acute cardiopulmonary process."
    )
    labels = nih(text)
    assert labels["Pneumonia"] is None
    assert labels["Cardiomegaly"] == labels["Consolidation"] == NEGATIVE
    assert labels["normal"] == POSITIVE


def test_headers_on_their_own_line_and_in_any_case():
    text = "Findings\nThe heart is enlarged.\n\nImpression\nCardiomegaly."
    mentions = explain(text)
    assert {m.section for m in mentions} == {"findings", "impression"}
    assert nih(text)["Cardiomegaly"] == POSITIVE


def test_text_after_a_skipped_section_is_labeled():
    labels = nih("HISTORY: pneumonia.\n\nThe lungs are clear. Small left effusion.")
    assert labels["Pneumonia"] is None
    assert labels["Effusion"] == POSITIVE


def test_findings_and_impression_given_separately():
    labels = nih(None, findings="Small left effusion.", impression="No pneumothorax.")
    assert labels["Effusion"] == POSITIVE
    assert labels["Pneumothorax"] == NEGATIVE
    mentions = explain(findings="Small left effusion.", impression="No pneumothorax.")
    assert [m.section for m in mentions] == ["findings", "impression"]


def test_text_and_sections_together_is_an_error():
    with pytest.raises(ValueError):
        label_report("No effusion.", findings="No effusion.")


def test_one_finding_per_line_without_periods():
    labels = nih("Lungs clear\nNo effusion\nCardiomegaly")
    assert labels["Effusion"] == NEGATIVE
    assert labels["Cardiomegaly"] == POSITIVE


def test_numbered_impression():
    labels = nih("IMPRESSION: 1. No pneumothorax. 2. Small left pleural effusion.")
    assert labels["Pneumothorax"] == NEGATIVE
    assert labels["Effusion"] == POSITIVE


# ---------------------------------------------------------------- No Finding / normal and vocabularies


def test_keys_and_order_of_both_vocabularies():
    assert tuple(chx("x")) == CHEXPERT14
    assert tuple(nih("x")) == (*NIH14, "normal")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("No acute cardiopulmonary abnormality.", POSITIVE),
        ("Lungs are clear. No effusion or pneumothorax.", POSITIVE),
        ("Endotracheal tube in place. Lungs are clear.", POSITIVE),  # devices are not abnormal
        ("Mild cardiomegaly.", NEGATIVE),
        ("Possible right lower lobe pneumonia.", NEGATIVE),  # uncertain counts as abnormal
        ("Healed rib fracture.", NEGATIVE),
    ],
)
def test_no_finding(text, expected):
    assert chx(text)["No Finding"] == expected


def test_normal_follows_the_nih_labels():
    assert nih("Hiatal hernia.")["normal"] == NEGATIVE
    assert nih("Rib fracture.")["normal"] == POSITIVE  # not an NIH-14 finding
    assert nih("Possible effusion.")["normal"] == NEGATIVE


@pytest.mark.parametrize("text", ["", "   \n", None])
def test_empty_report_is_all_none(text):
    assert set(chx(text).values()) == {None}
    assert set(nih(text).values()) == {None}


def test_positive_mention_wins_over_negative_and_uncertain():
    text = "FINDINGS: Possible small left effusion. IMPRESSION: Small left effusion. No right effusion."
    assert nih(text)["Effusion"] == POSITIVE
    assert nih("Possible left effusion. No right effusion.")["Effusion"] == UNCERTAIN


def test_unknown_vocabulary_is_a_config_error():
    with pytest.raises(ConfigError, match="chexpert14"):
        label_report("No effusion.", vocab="mimic")


def test_label_reports_matches_label_report():
    reports = ["No effusion.", None, {"findings": "Cardiomegaly.", "impression": None}]
    assert label_reports(reports, vocab="nih14") == [
        nih("No effusion."),
        nih(None),
        nih(None, findings="Cardiomegaly."),
    ]


def test_explain_says_why():
    (mention,) = [m for m in explain("There is no evidence of pneumothorax.") if m.concept == "pneumothorax"]
    assert mention.status == NEGATIVE
    assert mention.cue == "no evidence of"
    assert mention.text == "pneumothorax"
    original = "Left Pleural EFFUSION cannot be excluded."
    (mention,) = explain(original)
    assert original[mention.start : mention.end] == mention.text == "EFFUSION"
    assert mention.status == UNCERTAIN


def test_case_and_offsets_survive_characters_that_lowercase_to_two():
    text = "\u0130\u0130 Small EFFUSION."
    (mention,) = explain(text)
    assert text[mention.start : mention.end] == "EFFUSION"


def test_deterministic():
    text = "Possible small left effusion versus atelectasis. No pneumothorax. Stable cardiomegaly."
    assert all(nih(text) == nih(text) for _ in range(3))


# ---------------------------------------------------------------- the lexicon is data that keeps its promises


def _lexicon_json(name):
    return json.loads(resources.files("cxrlm.data").joinpath("lexicon", name).read_text(encoding="utf-8"))


def _concept_phrases():
    findings = _lexicon_json("findings.json")
    for name, spec in findings["concepts"].items():
        for kind in ("mentions", "negative", "uncertain"):
            for phrase in spec.get(kind, []):
                yield name, spec["keywords"], labeler._whitespace(labeler._expand(phrase, findings["macros"]))


def test_lexicon_labels_exist_in_their_vocabularies():
    for name, spec in _lexicon_json("findings.json")["concepts"].items():
        assert spec["labels"]["nih14"] in (*NIH14, None), name
        assert spec["labels"]["chexpert14"] in (*CHEXPERT14, None), name


def test_lexicon_is_lowercase_and_phrases_start_with_a_word():
    # The text is lowercased and matched without re.IGNORECASE; the missing leading \b is checked
    # after matching, which is only right for phrases that start with a word character.
    for name, _, phrase in _concept_phrases():
        assert re.sub(r"\\[A-Za-z]", "", phrase) == re.sub(r"\\[A-Za-z]", "", phrase).lower(), (name, phrase)
        assert re.match(r"(?:\(\?:)*[a-z0-9\[(]", phrase), (name, phrase)


@pytest.mark.parametrize("name, keywords, phrase", list(_concept_phrases()), ids=lambda v: str(v)[:40])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_phrase_contains_one_of_its_keywords(name, keywords, phrase, data):
    # The keywords gate the regexes: a phrase without any of them would silently never match.
    example = data.draw(st.from_regex(re.compile(phrase), fullmatch=True))
    assert any(keyword in example.lower() for keyword in keywords), (name, phrase, example)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_labeling_never_crashes_on_arbitrary_text(text):
    for vocab in ("nih14", "chexpert14"):
        labels = label_report(text, vocab=vocab)
        assert set(labels.values()) <= {POSITIVE, NEGATIVE, UNCERTAIN, None}
    for mention in explain(text):
        assert text[mention.start : mention.end] == mention.text


_WORDS = st.sampled_from(
    [
        *[
            "no",
            "not",
            "without",
            "possible",
            "effusion",
            "pneumothorax",
            "heart",
            "is",
            "enlarged",
            "normal",
            "cannot",
            "exclude",
            "versus",
        ],
        *[
            "XXXX",
            "cardiomegaly",
            "atelectasis",
            "FINDINGS:",
            "IMPRESSION:",
            "INDICATION:",
            "resolved",
            "change",
            "in",
            "stable",
        ],
        ",",
        ".",
        ";",
        "\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=40))
def test_labeling_never_crashes_on_report_like_text(words):
    text = " ".join(words)
    labels = label_report(text, vocab="chexpert14")
    assert labels["No Finding"] in (POSITIVE, NEGATIVE, None)


# ---------------------------------------------------------------- gold standard (needs ../shared/data)


def test_micro_f1_on_the_openi_gold_standard(shared_data):
    path = shared_data / "iu-xray-reports" / "reports_with_gold_labels.csv"
    scores = labeler.evaluate_gold(str(path))
    assert scores["reports"]["n"] > 1000
    assert scores["micro"]["f1"] >= 0.90
    for split in ("even", "odd"):
        assert labeler.evaluate_gold(str(path), split)["micro"]["f1"] >= 0.88


def test_evaluate_gold_reports_a_bad_path():
    with pytest.raises(InputError, match="cannot read gold labels"):
        labeler.evaluate_gold("/nonexistent/gold.csv")


# ---------------------------------------------------------------- `cxrlm label`


def _run_label(argv):
    """Run the verb through its own parser (works even before the other verb modules exist)."""
    from cxrlm.cli import label

    parser = ArgumentParser(prog="cxrlm")
    label.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def _write_csv(path, rows, fieldnames):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


REPORTS = [
    {"uid": "1", "findings": "Small left pleural effusion. No pneumothorax.", "impression": "Effusion."},
    {"uid": "2", "findings": "", "impression": "No acute cardiopulmonary abnormality."},
    {"uid": "3", "findings": "Possible right lower lobe pneumonia, versus atelectasis.", "impression": ""},
]


def test_csv_round_trip_chexpert(tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_csv(src, REPORTS, ["uid", "findings", "impression"])
    assert _run_label(["label", str(src), "--out", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["uid", "findings", "impression", *CHEXPERT14]
    assert [row["uid"] for row in rows] == ["1", "2", "3"]
    assert rows[0]["findings"] == REPORTS[0]["findings"]
    assert (rows[0]["Pleural Effusion"], rows[0]["Pneumothorax"], rows[0]["Cardiomegaly"]) == ("1", "0", "")
    assert rows[0]["No Finding"] == "0"
    assert rows[1]["No Finding"] == "1"
    assert (rows[2]["Pneumonia"], rows[2]["Atelectasis"]) == ("-1", "-1")


def test_csv_nih_vocabulary_and_prefix(tmp_path, capsys):
    src = tmp_path / "in.csv"
    _write_csv(src, REPORTS, ["uid", "findings", "impression"])
    assert _run_label(["label", str(src), "--vocab", "nih14", "--prefix", "pred_"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert list(rows[0])[-1] == "pred_normal"
    assert rows[0]["pred_Effusion"] == "1"
    assert rows[1]["pred_normal"] == "1"


def test_csv_other_text_columns(tmp_path, capsys):
    src = tmp_path / "in.csv"
    _write_csv(src, [{"id": "a", "report": "FINDINGS: Cardiomegaly. INDICATION: pneumonia?"}], ["id", "report"])
    assert _run_label(["label", str(src), "--text-columns", "report"]) == 0
    (row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    assert (row["Cardiomegaly"], row["Pneumonia"]) == ("1", "")


def test_text_file(tmp_path, capsys):
    report = tmp_path / "report.txt"
    report.write_text("FINDINGS: No pneumothorax. Possible small left effusion.\n", encoding="utf-8")
    assert _run_label(["label", str(report), "--explain"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Pneumothorax\s+negative$", out, re.MULTILINE)
    assert re.search(r"^Pleural Effusion\s+uncertain$", out, re.MULTILINE)
    assert re.search(r"^Cardiomegaly\s+not mentioned$", out, re.MULTILINE)
    assert "(Possible)" in out


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "no such file"),
        ("", [], "no rows"),
        ("uid,findings,impression\n", [], "no rows"),
        ("uid,text\n1,No effusion.\n", [], "no column 'findings'"),
        ("uid,findings,impression,Cardiomegaly\n1,a,b,1\n", [], "already has columns Cardiomegaly"),
        (b"\xff\xfe\x00binary", [], "not UTF-8"),
        ('a,b\n1,"' + "x" * 200_000 + "\n", ["--text-columns", "a"], "not a readable CSV"),  # unclosed quote
        ("uid,findings\n1,x\n", ["--text-columns", " , "], "--text-columns is empty"),
    ],
)
def test_csv_bad_input(tmp_path, content, extra, message):
    src = tmp_path / "in.csv"
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content is not None:
        src.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(message)) as info:
        _run_label(["label", str(src), *extra])
    assert "\n" not in str(info.value)


def test_empty_text_file(tmp_path):
    report = tmp_path / "report.txt"
    report.write_text("  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        _run_label(["label", str(report)])


def test_unwritable_out(tmp_path):
    src = tmp_path / "in.csv"
    _write_csv(src, REPORTS, ["uid", "findings", "impression"])
    with pytest.raises(InputError, match="cannot write"):
        _run_label(["label", str(src), "--out", str(tmp_path / "missing" / "out.csv")])


def _main_or_skip():
    try:
        from cxrlm.cli import build_parser, main

        build_parser()
    except ModuleNotFoundError as err:  # another verb module is not written yet
        if err.name == "cxrlm.cli.label":
            raise
        pytest.skip(f"cxrlm.cli cannot load yet: {err}")
    return main


def test_cli_main_round_trip(tmp_path):
    main = _main_or_skip()
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_csv(src, REPORTS, ["uid", "findings", "impression"])
    assert main(["label", str(src), "--vocab", "nih14", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert rows[0]["Effusion"] == "1"


def test_cli_main_prints_one_line_errors(tmp_path, capsys):
    main = _main_or_skip()
    assert main(["label", str(tmp_path / "missing.csv")]) == InputError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_evaluate_scores_a_gold_csv_as_a_markdown_table(tmp_path, capsys):
    gold = [{**REPORTS[0], "Effusion": "1", "Pneumonia": "0"}, {**REPORTS[1], "Effusion": "0", "Pneumonia": "0"},
            {**REPORTS[2], "Effusion": "0", "Pneumonia": "1"}]
    _write_csv(tmp_path / "gold.csv", gold, ["uid", "findings", "impression", "Effusion", "Pneumonia"])
    assert _run_label(["label", str(tmp_path / "gold.csv"), "--evaluate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3 reports, split=all"
    assert lines[1] == "| label | precision | recall | F1 | gold positives | predicted positives |"
    assert "| Effusion | 1.000 | 1.000 | 1.000 | 1 | 1 |" in lines
    assert _run_label(["label", str(tmp_path / "gold.csv"), "--evaluate", "--split", "odd"]) == 0
    assert capsys.readouterr().out.startswith("2 reports, split=odd")
