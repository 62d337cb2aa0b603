"""Short-answer (VQA) accuracy: exact match and normalized-answer match.

Normalization: lowercase; punctuation becomes space; the articles "a", "an", "the" are dropped; whitespace is
collapsed; a whole answer that is a yes/no synonym ("yes", "true", "present", "positive"; "no", "false",
"absent", "negative", "not present", "none") becomes "yes" or "no". When the reference is "yes" or "no",
a predicted sentence counts by its leading word or phrase ("No, there is no effusion." -> "no"): closed
questions are scored by polarity, open ones by the whole normalized answer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

YES = ("yes", "y", "yeah", "yep", "true", "correct", "present", "positive", "affirmative")
NO = ("no", "n", "nope", "false", "incorrect", "absent", "negative", "not present", "none", "not seen")
ARTICLES = ("a", "an", "the")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_POLARITY = {**{w: "yes" for w in YES}, **{w: "no" for w in NO}}


def normalize_answer(text: str | None) -> str:
    words = _PUNCTUATION.sub(" ", (text or "").lower()).split()
    answer = " ".join(w for w in words if w not in ARTICLES)
    return _POLARITY.get(answer, answer)


def leading_polarity(text: str | None) -> str | None:
    """'yes' or 'no' when the answer starts with a yes/no word or phrase, else None."""
    words = normalize_answer(text).split()
    for length in (2, 1):  # two-word phrases first: "not present" before a bare "not"
        phrase = " ".join(words[:length])
        if len(words) >= length and phrase in _POLARITY:
            return _POLARITY[phrase]
    return None


def exact_match(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Fraction of answers identical to the reference after stripping surrounding whitespace."""
    _check_pairs(references, predictions)
    if not references:
        return float("nan")
    return sum((r or "").strip() == (p or "").strip() for r, p in zip(references, predictions)) / len(references)


def answer_matches(reference: str | None, prediction: str | None) -> bool:
    ref = normalize_answer(reference)
    if ref in ("yes", "no"):
        return leading_polarity(prediction) == ref
    return ref == normalize_answer(prediction)


def normalized_accuracy(references: Sequence[str], predictions: Sequence[str]) -> float:
    _check_pairs(references, predictions)
    if not references:
        return float("nan")
    return sum(answer_matches(r, p) for r, p in zip(references, predictions)) / len(references)


def _check_pairs(references: Sequence, predictions: Sequence) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions: they must pair up")
