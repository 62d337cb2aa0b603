"""Classification metrics and CE-F1: hand-computed cases and scikit-learn as the reference."""

import math

import numpy as np
import pytest

from cxrlm.metrics import labels as L
from cxrlm.pathologies import CHEXPERT14


def test_auroc_hand_computed():
    # pairs (pos, neg): (0.35 vs 0.1) win, (0.35 vs 0.4) lose, (0.8 vs both) win: 3 of 4
    assert L.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert L.auroc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
    assert L.auroc([0, 1, 1], [0.9, 0.1, 0.2]) == 0.0


def test_auroc_undefined_with_one_class_and_skips_unlabelled():
    assert math.isnan(L.auroc([1, 1, 1], [0.2, 0.3, 0.4]))
    # NaN and -1 (uncertain) truths are dropped: what is left is the hand case above
    assert L.auroc([0, np.nan, 0, -1, 1, 1], [0.1, 0.99, 0.4, 0.0, 0.35, 0.8]) == 0.75


def test_sensitivity_at_specificity_hand_computed():
    y = [0] * 10 + [1] * 4
    s = list(np.arange(10) / 10) + [0.95, 0.85, 0.5, 0.05]
    # specificity >= 0.9 allows 1 false positive (score 0.9): positives above 0.9 are 0.95 only -> 1/4;
    # at threshold 0.85 the negatives 0.9 is the one false positive (spec 0.9), positives 0.95, 0.85 -> 2/4
    assert L.sensitivity_at_specificity(y, s, 0.9) == 0.5
    assert L.sensitivity_at_specificity(y, s, 1.0) == 0.25


def test_precision_recall_f1_zero_division():
    assert L.precision_recall_f1(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert L.precision_recall_f1(2, 1, 1) == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})


def _random_case(seed, n=60, n_labels=4):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, n_labels)) < 0.3).astype(float)
    truth[rng.random((n, n_labels)) < 0.15] = np.nan  # not labelled
    score = np.round(rng.random((n, n_labels)), 1)  # coarse scores: many ties
    return truth, score


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    truth, score = _random_case(seed)
    labels = ["a", "b", "c", "d"]
    ours = L.classification_metrics(truth, score, labels, threshold=0.5)
    f1s = []
    for j, name in enumerate(labels):
        keep = ~np.isnan(truth[:, j])
        y, s = truth[keep, j], score[keep, j]
        assert ours["per_label"][name]["auroc"] == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=False)
        our_fpr, our_tpr, our_thr = L.roc_curve(y, s)
        np.testing.assert_allclose(our_fpr, fpr)
        np.testing.assert_allclose(our_tpr, tpr)
        np.testing.assert_allclose(our_thr[1:], thr[1:])
        expected_sens = max(t for f, t in zip(fpr, tpr) if f <= 0.1 + 1e-12)
        assert ours["per_label"][name]["sensitivity_at_90_specificity"] == pytest.approx(expected_sens)
        f1 = metrics.f1_score(y, s >= 0.5, zero_division=0)
        if y.sum():  # macro F1 averages labels with a positive reference item
            f1s.append(f1)
        assert ours["per_label"][name]["f1"] == pytest.approx(f1)
        assert ours["per_label"][name]["precision"] == pytest.approx(
            metrics.precision_score(y, s >= 0.5, zero_division=0)
        )
        assert ours["per_label"][name]["recall"] == pytest.approx(metrics.recall_score(y, s >= 0.5, zero_division=0))
    assert ours["macro_f1"] == pytest.approx(np.mean(f1s)) == pytest.approx(L.macro_f1(truth, score))
    assert L.micro_f1(truth, score) == pytest.approx(ours["micro_f1"])
    keep = ~np.isnan(truth)
    assert ours["micro_f1"] == pytest.approx(metrics.f1_score(truth[keep], score[keep] >= 0.5))
    assert ours["micro_auroc"] == pytest.approx(metrics.roc_auc_score(truth[keep], score[keep]))


def test_classification_metrics_from_dicts_skip_missing_labels():
    truth = [{"Cardiomegaly": 1, "Edema": None}, {"Cardiomegaly": 0, "Edema": 1}, {"Cardiomegaly": 0, "Edema": 0}]
    score = [
        {"Cardiomegaly": 0.9, "Edema": 0.9},
        {"Cardiomegaly": 0.2, "Edema": 0.6},
        {"Cardiomegaly": 0.6, "Edema": 0.1},
    ]
    out = L.classification_metrics(truth, score, labels=("Cardiomegaly", "Edema", "Fracture"))
    assert out["per_label"]["Edema"]["n"] == 2 and out["per_label"]["Edema"]["auroc"] == 1.0
    assert out["per_label"]["Cardiomegaly"]["f1"] == pytest.approx(2 / 3)  # tp 1, fp 1 (0.6), fn 0
    fracture = out["per_label"]["Fracture"]
    assert fracture["n"] == 0 and math.isnan(fracture["auroc"]) and math.isnan(fracture["f1"])
    assert out["macro_auroc"] == 1.0  # Fracture (never labelled) is skipped, not counted as 0
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_macro_f1_leaves_out_labels_never_positive():
    truth = np.array([[1, 0], [0, 0], [1, 0]], dtype=float)
    score = np.array([[0.9, 0.1], [0.1, 0.1], [0.2, 0.1]])
    assert L.macro_f1(truth, score) == pytest.approx(2 / 3)  # label 2 has no positive: not a 0 in the mean
    assert math.isnan(L.macro_f1(np.zeros((2, 2)), score[:2]))


def test_first_component_share_tells_one_score_per_image_from_label_specific_scores():
    rng = np.random.default_rng(0)
    abnormal = rng.normal(size=(200, 1))  # one number per image, each label a shifted, noisy copy of it
    one_score = 1 / (1 + np.exp(-(abnormal + rng.normal(-1.5, 0.1, size=(1, 8)) + 0.05 * rng.normal(size=(200, 8)))))
    assert L.first_component_share(one_score) > 0.95
    assert L.first_component_share(rng.random((200, 8))) < 0.2
    with_constant = np.c_[one_score[:, :1], np.full(200, 0.3), np.full(200, np.nan)]
    assert math.isnan(L.first_component_share(with_constant))  # one label left: no components to compare
    assert L.first_component_share(np.c_[one_score, np.full(200, 0.3)]) == pytest.approx(
        L.first_component_share(one_score))


def test_row_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="pair up"):
        L.classification_metrics([{"Edema": 1}], [], labels=("Edema",))


# ---------------------------------------------------------------- CE-F1


def _fake_labeler(texts):
    """Keyword labeler for the test: 'effusion' -> Pleural Effusion, 'cardiomegaly' -> Cardiomegaly, 'no X' -> 0."""
    rows = []
    for text in texts:
        row = dict.fromkeys(CHEXPERT14)
        for word, name in (
            ("effusion", "Pleural Effusion"),
            ("cardiomegaly", "Cardiomegaly"),
            ("device", "Support Devices"),
        ):
            if f"no {word}" in text:
                row[name] = 0
            elif f"possible {word}" in text:
                row[name] = -1
            elif word in text:
                row[name] = 1
        rows.append(row)
    return rows


def test_ce_f1_hand_computed():
    refs = ["cardiomegaly and effusion", "effusion", "no effusion", "device"]
    hyps = ["cardiomegaly", "possible effusion", "effusion", "device"]
    out = L.ce_f1(refs, hyps, labeler=_fake_labeler)
    # positives: ref {C,E}, {E}, {}, {D}; hyp {C}, {} (uncertain is not positive), {E}, {D}
    # tp = C1 + D4 = 2, fp = E3 = 1, fn = E1 + E2 = 2
    assert out["ce_f1_micro_14"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert out["ce_precision_micro_14"] == pytest.approx(2 / 3)
    assert out["ce_recall_micro_14"] == pytest.approx(2 / 4)
    # macro over 14: Cardiomegaly 1, Support Devices 1, Pleural Effusion 0, 11 labels never positive -> 0
    assert out["ce_f1_macro_14"] == pytest.approx(2 / 14)
    # top 5 has no Support Devices: tp 1, fp 1, fn 2; macro: Cardiomegaly 1 of 5 labels
    assert out["ce_f1_micro_5"] == pytest.approx(2 / (2 + 1 + 2))
    assert out["ce_f1_macro_5"] == pytest.approx(1 / 5)


def test_ce_f1_matches_sklearn_on_matrices():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    ref, hyp = (rng.random((40, 14)) < 0.2).astype(float), (rng.random((40, 14)) < 0.2).astype(float)
    out = L.ce_f1_from_labels(ref, hyp)
    assert out["ce_f1_micro_14"] == pytest.approx(metrics.f1_score(ref, hyp, average="micro", zero_division=0))
    assert out["ce_f1_macro_14"] == pytest.approx(metrics.f1_score(ref, hyp, average="macro", zero_division=0))
    top5 = [CHEXPERT14.index(n) for n in L.CE_TOP5]
    assert out["ce_f1_macro_5"] == pytest.approx(
        metrics.f1_score(ref[:, top5], hyp[:, top5], average="macro", zero_division=0)
    )


def test_ce_f1_with_the_project_labeler():
    labeler = pytest.importorskip("cxrlm.data.labeler")
    if not hasattr(labeler, "label_reports"):
        pytest.skip("cxrlm.data.labeler.label_reports is not written yet")
    same = ["Cardiomegaly with a small right pleural effusion.", "No acute cardiopulmonary abnormality."]
    out = L.ce_f1(same, same)
    assert out["ce_f1_micro_14"] == 1.0
    wrong = L.ce_f1(same, ["Normal heart size. No effusion.", "Large left pleural effusion."])
    assert wrong["ce_f1_micro_14"] < 0.5
