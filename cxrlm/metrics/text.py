"""Report text overlap: BLEU-1..4, ROUGE-L, CIDEr-D (and METEOR when Java is present).

BLEU, ROUGE-L and CIDEr-D follow pycocoevalcap (the COCO caption code that R2Gen-style report papers quote)
exactly: corpus BLEU with the "closest" reference length and its 1e-9/1e-15 smoothing, ROUGE-L as the LCS
F-measure with beta 1.2, CIDEr-D with document frequencies from the reference corpus, sigma 6, clipping, x10.
They are small re-implementations, checked against pycocoevalcap, sacrebleu and rouge-score to 1e-9 in
tests/test_metrics_text.py, for three reasons: the core stays free of pycocoevalcap's 90 MB of Java jars,
per-item statistics make the bootstrap of corpus BLEU exact and fast, and training rewards can call them per
item. METEOR has no such re-implementation: it runs pycocoevalcap's METEOR 1.5 jar and needs Java and the
`eval` extra; without them `meteor` returns None and `text_metrics` leaves it out with a note.

Tokenizer (`tokenize`): lowercase; a token is a run of letters or digits, optionally joined inside by "-",
"." or "/" ("x-ray", "2.5", "t/l"); all other characters (punctuation) are dropped. This is close to what
pycocoevalcap's Java PTBTokenizer gives after its punctuation removal, without needing Java.

Not here: model-based metrics (see model_based.py), clinical-efficacy F1 (see labels.ce_f1).
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+(?:[-./][a-z0-9]+)*")
_SMALL, _TINY = 1e-9, 1e-15  # pycocoevalcap's BLEU smoothing: 0 matches give ~0, never a division by zero


def tokenize(text: str | None) -> list[str]:
    return _TOKEN.findall((text or "").lower())


def _ngrams(tokens: list[str], max_n: int) -> Counter:
    return Counter(tuple(tokens[i : i + k]) for k in range(1, max_n + 1) for i in range(len(tokens) - k + 1))


# ---------------------------------------------------------------- BLEU


def bleu_stats(reference: str, hypothesis: str, max_n: int = 4) -> np.ndarray:
    """Sufficient statistics of one item: [hyp_len, ref_len, matches_1..n, totals_1..n]. They add up over items."""
    ref, hyp = tokenize(reference), tokenize(hypothesis)
    ref_counts, hyp_counts = _ngrams(ref, max_n), _ngrams(hyp, max_n)
    matches = [0] * max_n
    for gram, count in hyp_counts.items():
        matches[len(gram) - 1] += min(count, ref_counts.get(gram, 0))
    totals = [max(0, len(hyp) - k) for k in range(max_n)]
    return np.array([len(hyp), len(ref), *matches, *totals], dtype=np.float64)


def bleu_from_stats(stats: np.ndarray) -> dict[str, float]:
    """BLEU-1..n from summed statistics (one row, or a matrix of rows to be summed)."""
    stats = np.asarray(stats, dtype=np.float64)
    total = stats.sum(axis=0) if stats.ndim == 2 else stats
    max_n = (len(total) - 2) // 2
    hyp_len, ref_len = float(total[0]), float(total[1])
    matches, totals = total[2 : 2 + max_n], total[2 + max_n :]
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    out, product = {}, 1.0
    for k in range(max_n):
        product *= (matches[k] + _TINY) / (totals[k] + _SMALL)
        out[f"bleu{k + 1}"] = float(product ** (1 / (k + 1)) * brevity)
    return out


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..n (not the mean of sentence BLEU): n-gram matches are pooled over all items."""
    _check_pairs(references, hypotheses)
    return bleu_from_stats(np.stack([bleu_stats(r, h, max_n) for r, h in zip(references, hypotheses)]))


def sentence_bleu(reference: str, hypothesis: str, max_n: int = 4) -> float:
    """BLEU-n of one item, as pycocoevalcap's per-image score (smoothed, so 0 matches give ~0, not an error)."""
    return bleu_from_stats(bleu_stats(reference, hypothesis, max_n))[f"bleu{max_n}"]


# ---------------------------------------------------------------- ROUGE-L


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token_a == token_b else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(reference: str, hypothesis: str, beta: float = 1.2) -> float:
    """ROUGE-L F-measure of one item (beta 1.2 weighs recall, as pycocoevalcap). Empty text on either side: 0."""
    ref, hyp = tokenize(reference), tokenize(hypothesis)
    lcs = _lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l_scores(references: Sequence[str], hypotheses: Sequence[str]) -> list[float]:
    _check_pairs(references, hypotheses)
    return [rouge_l(r, h) for r, h in zip(references, hypotheses)]


# ---------------------------------------------------------------- CIDEr-D


def cider_d_scores(
    references: Sequence[str], hypotheses: Sequence[str], max_n: int = 4, sigma: float = 6.0
) -> list[float]:
    """Per-item CIDEr-D with document frequencies from this corpus of references.

    CIDEr-D is corpus-relative: the IDF weight of an n-gram is log(N / df), so one item alone scores 0
    (log 1 = 0) and scores from corpora of different sizes are not comparable. The corpus mean is the metric.
    """
    _check_pairs(references, hypotheses)
    ref_counts = [_ngrams(tokenize(r), max_n) for r in references]
    hyp_counts = [_ngrams(tokenize(h), max_n) for h in hypotheses]
    doc_freq = Counter(gram for counts in ref_counts for gram in counts)
    log_n = math.log(len(references)) if references else 0.0
    scores = []
    for ref, hyp in zip(ref_counts, hyp_counts):
        vec_h, norm_h, len_h = _tfidf(hyp, doc_freq, log_n, max_n)
        vec_r, norm_r, len_r = _tfidf(ref, doc_freq, log_n, max_n)
        penalty = math.exp(-((len_h - len_r) ** 2) / (2 * sigma**2))
        sims = []
        for k in range(max_n):
            # CIDEr-D clips the hypothesis weight at the reference weight, so repeating an n-gram earns nothing
            dot = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec_h[k].items())
            if norm_h[k] and norm_r[k]:
                dot /= norm_h[k] * norm_r[k]
            sims.append(dot * penalty)
        scores.append(10.0 * sum(sims) / max_n)
    return scores


def _tfidf(counts: Counter, doc_freq: Counter, log_n: float, max_n: int):
    vec = [{} for _ in range(max_n)]
    sq_norm = [0.0] * max_n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        weight = tf * (log_n - math.log(max(1.0, doc_freq[gram])))
        vec[k][gram] = weight
        sq_norm[k] += weight**2
        if k == 1:  # pycocoevalcap's length is the bigram count (tokens - 1), kept for comparable numbers
            length += tf
    return vec, [math.sqrt(v) for v in sq_norm], length


# ---------------------------------------------------------------- METEOR


def meteor_available() -> bool:
    if shutil.which("java") is None:
        return False
    try:
        import pycocoevalcap.meteor.meteor  # noqa: F401
    except ImportError:
        return False
    return True


def meteor_scores(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, list[float]] | None:
    """(corpus METEOR, per-item scores) from METEOR 1.5 (pycocoevalcap's jar, run with Java); None without Java.

    Texts are tokenized with `tokenize` first, as the other metrics. The jar starts in a few seconds.
    """
    _check_pairs(references, hypotheses)
    if not meteor_available() or not references:
        return None
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {i: [" ".join(tokenize(r))] for i, r in enumerate(references)}
    res = {i: [" ".join(tokenize(h))] for i, h in enumerate(hypotheses)}
    scorer = Meteor()
    try:
        corpus, items = scorer.compute_score(gts, res)
    finally:
        scorer.meteor_p.kill()  # its __del__ would also do this, but only when garbage-collected
        scorer.meteor_p.wait()
    return float(corpus), [float(s) for s in items]


# ---------------------------------------------------------------- all together


def text_metrics(
    references: Sequence[str], hypotheses: Sequence[str], meteor: bool = False
) -> tuple[dict[str, float], list[str]]:
    """Corpus BLEU-1..4, mean ROUGE-L, mean CIDEr-D (and METEOR when asked and Java is present).

    Returns (values, notes): a note says why a metric asked for was left out.
    """
    _check_pairs(references, hypotheses)
    if not references:
        return {}, ["no items to score"]
    values = corpus_bleu(references, hypotheses)
    values["rouge_l"] = float(np.mean(rouge_l_scores(references, hypotheses)))
    values["cider_d"] = float(np.mean(cider_d_scores(references, hypotheses)))
    notes = []
    if meteor:
        result = meteor_scores(references, hypotheses)
        if result is None:
            notes.append("METEOR skipped: it needs Java on PATH and pycocoevalcap (pip install 'cxrlm[eval]')")
        else:
            values["meteor"] = result[0]
    return values, notes


def _check_pairs(references: Sequence, hypotheses: Sequence) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses: they must pair up")
