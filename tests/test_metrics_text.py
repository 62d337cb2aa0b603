"""Text metrics: hand-computed cases, and cross-checks against pycocoevalcap, sacrebleu and rouge-score."""

import contextlib
import io
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrlm.metrics import text as T

REFS = [
    "The heart is normal in size. No pleural effusion.",
    "Mild cardiomegaly with small bilateral pleural effusions.",
    "No acute cardiopulmonary abnormality. Lungs are clear.",
    "Right lower lobe consolidation, concerning for pneumonia.",
]
HYPS = [
    "Heart size is normal. No effusion.",
    "Cardiomegaly. Small left pleural effusion.",
    "",
    "Consolidation in the right lower lobe, likely pneumonia pneumonia.",
]

sentences = st.lists(
    st.sampled_from(["no", "yes", "effusion", "pleural", "heart", "lung", "clear", "the", "a", "left", "right"]),
    max_size=12,
)


def test_tokenize_drops_punctuation_and_keeps_inner_joins():
    assert T.tokenize("No X-ray change; 2.5 cm nodule, T/L spine.") == [
        "no",
        "x-ray",
        "change",
        "2.5",
        "cm",
        "nodule",
        "t/l",
        "spine",
    ]
    assert T.tokenize(None) == [] and T.tokenize("...") == []


def test_bleu_hand_computed():
    ref, hyp = "the cat sat on the mat", "the cat sat on a mat"
    scores = T.corpus_bleu([ref], [hyp])
    assert scores["bleu1"] == pytest.approx(5 / 6, abs=1e-9)  # 5 of 6 unigrams match, same length
    assert scores["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-9)  # 3 of 5 bigrams
    short = T.corpus_bleu([ref], ["the cat"])
    assert short["bleu1"] == pytest.approx(math.exp(1 - 6 / 2), abs=1e-9)  # all match, brevity penalty


def test_corpus_bleu_pools_counts_rather_than_averaging():
    stats = [T.bleu_stats(r, h) for r, h in zip(REFS, HYPS)]
    pooled = T.bleu_from_stats(sum(stats))
    assert pooled == T.corpus_bleu(REFS, HYPS)
    mean_of_items = sum(T.bleu_from_stats(s)["bleu1"] for s in stats) / len(stats)
    assert pooled["bleu1"] != pytest.approx(mean_of_items)


def test_empty_hypothesis_scores_zero_not_error():
    assert T.sentence_bleu("no effusion", "") < 1e-6
    assert T.rouge_l("no effusion", "") == 0.0
    assert T.cider_d_scores(["no effusion", "heart is big"], ["", "heart is big"])[0] == 0.0


def test_rouge_l_hand_computed():
    # LCS("a b c d e", "a c e f") = 3: precision 3/4, recall 3/5
    p, r = 3 / 4, 3 / 5
    assert T.rouge_l("a b c d e", "a c e f") == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    assert T.rouge_l("a b c d e", "a c e f", beta=1.0) == pytest.approx(2 * p * r / (p + r))


def test_cider_d_hand_computed():
    # two items: df of every n-gram is 1, N = 2, so every weight is log 2; item 1 matches exactly on
    # unigrams and bigrams (cosine 1 each), has no 3- or 4-grams: 10 * (1 + 1 + 0 + 0) / 4 = 5
    assert T.cider_d_scores(["a b", "c d"], ["a b", "x y"]) == pytest.approx([5.0, 0.0])
    assert T.cider_d_scores(["a b c"], ["a b c"]) == [0.0]  # a corpus of one has log(1) = 0 idf


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="pair up"):
        T.corpus_bleu(["a"], ["a", "b"])


def test_text_metrics_keys_and_meteor_note(monkeypatch):
    monkeypatch.setattr(T.shutil, "which", lambda name: None)
    values, notes = T.text_metrics(REFS, HYPS, meteor=True)
    assert set(values) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d"}
    assert "METEOR skipped" in notes[0]
    assert T.text_metrics([], []) == ({}, ["no items to score"])


# ---------------------------------------------------------------- against the reference libraries


def _coco(refs, hyps):
    gts = {i: [" ".join(T.tokenize(r))] for i, r in enumerate(refs)}
    res = {i: [" ".join(T.tokenize(h))] for i, h in enumerate(hyps)}
    return gts, res


def test_matches_pycocoevalcap_on_reports():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco(REFS, HYPS)
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, bleu_items = Bleu(4).compute_score(gts, res)
    ours = T.corpus_bleu(REFS, HYPS)
    assert [ours[f"bleu{k}"] for k in range(1, 5)] == pytest.approx(bleu, rel=1e-9, abs=1e-12)
    assert [T.sentence_bleu(r, h) for r, h in zip(REFS, HYPS)] == pytest.approx(bleu_items[3], abs=1e-12)
    assert T.cider_d_scores(REFS, HYPS) == pytest.approx(list(Cider().compute_score(gts, res)[1]), rel=1e-9)
    rouge = [s for s, h in zip(Rouge().compute_score(gts, res)[1], HYPS) if h]  # pycoco scores '' vs '' as 1
    assert [s for s, h in zip(T.rouge_l_scores(REFS, HYPS), HYPS) if h] == pytest.approx(rouge, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(sentences.filter(bool), sentences.filter(bool)), min_size=2, max_size=6))
def test_matches_pycocoevalcap_on_random_corpora(pairs):
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    refs, hyps = [" ".join(r) for r, _ in pairs], [" ".join(h) for _, h in pairs]
    gts, res = _coco(refs, hyps)
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    ours = T.corpus_bleu(refs, hyps)
    assert [ours[f"bleu{k}"] for k in range(1, 5)] == pytest.approx(bleu, rel=1e-9, abs=1e-15)
    assert T.cider_d_scores(refs, hyps) == pytest.approx(list(Cider().compute_score(gts, res)[1]), rel=1e-9, abs=1e-12)


def test_bleu_matches_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    refs = ["the heart is normal in size and the lungs are clear", "small left pleural effusion is seen here"]
    hyps = ["the heart is normal in size the lungs are clear", "a small left pleural effusion is seen"]
    ours = T.corpus_bleu(refs, hyps)
    for n in range(1, 5):
        scorer = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n)
        theirs = scorer.corpus_score([" ".join(T.tokenize(h)) for h in hyps], [[" ".join(T.tokenize(r)) for r in refs]])
        assert ours[f"bleu{n}"] * 100 == pytest.approx(theirs.score, rel=1e-6)


class _Identity:
    def tokenize(self, text):
        return text.split()


@settings(max_examples=25, deadline=None)
@given(sentences.filter(bool), sentences.filter(bool))
def test_rouge_l_matches_rouge_score(ref, hyp):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Identity())
    theirs = scorer.score(" ".join(ref), " ".join(hyp))["rougeL"]
    assert T.rouge_l(" ".join(ref), " ".join(hyp), beta=1.0) == pytest.approx(theirs.fmeasure, abs=1e-12)
    p, r = theirs.precision, theirs.recall
    expected = 0.0 if p == 0 else (1 + 1.44) * p * r / (r + 1.44 * p)
    assert T.rouge_l(" ".join(ref), " ".join(hyp)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.skipif(
    not os.environ.get("CXRLM_TEST_METEOR"), reason="set CXRLM_TEST_METEOR=1: the jar loads a 60 MB table (10-40 s)"
)
def test_meteor_runs_with_java():
    if not T.meteor_available():
        pytest.skip("METEOR needs Java and pycocoevalcap")
    corpus, items = T.meteor_scores(["no pleural effusion", "the heart is enlarged"], ["no pleural effusion", "xyz"])
    assert items[0] > 0.9 and items[1] == 0.0 and 0 < corpus < 1
