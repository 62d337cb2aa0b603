"""Expected-value decoding of numbers: a box coordinate is the mean of the model's belief over whole numbers.

Greedy decoding writes the likeliest first digit, then the likeliest next digit given it. For a coordinate the
model is unsure of (its mass spread over 52 to 61, say) that lands on a few modal values, whatever the image
shows. The probability-weighted mean of every number the model gives real mass is the estimate with the least
squared error under the model's own belief. Measured on cxrlm-tiny's validation lungs, the mean lifted the
IoU from 0.707 to 0.759 (weights/cxrlm-tiny/MODEL_CARD.md).

This module is pure: it sees log-probabilities, never the model. The engine supplies `branch(prefixes)`, the
next-token log-probabilities after each digit string (hf.HFEngine.generate_mean_numbers). It only works for
tokenizers that write one digit per token (Qwen2/2.5/3-VL, our own), where every number is a path in a tree of
digit tokens; `digit_tokens` returns None for the others.
"""

from collections.abc import Callable
from dataclasses import dataclass

FLOOR = 1e-4  # digit strings less likely than this are not expanded: a bounded tree, and their mass is negligible
MAX_DIGITS = 4  # pixel coordinates of a large input image
MAX_BRANCHES = 100  # the likeliest strings kept per digit (all of 0-100): bounds the cost of 3-4 digit numbers


def digit_tokens(tokenizer) -> dict[int, int] | None:
    """{token id: digit} when the tokenizer writes every number one digit per token, else None."""
    ids = tokenizer.encode("0123456789", add_special_tokens=False)
    if len(ids) != 10 or any(tokenizer.decode([i]).strip() != str(d) for d, i in enumerate(ids)):
        return None
    return {token: digit for digit, token in enumerate(ids)}


def number_distribution(branch: Callable, first, digits: dict[int, int], floor: float = FLOOR,
                        max_digits: int = MAX_DIGITS, max_branches: int = MAX_BRANCHES) -> dict[int, float]:
    """{value: probability} of the number that starts at the next token.

    `first` is the next-token log-probabilities (a 1-D tensor); `branch(prefixes)` returns the log-probabilities
    [len(prefixes), vocab] of the token after each digit-token list (all of one length). A number ends where the
    model writes anything but a digit. The probabilities sum to slightly under 1: pruned strings are left out.
    Each digit costs one `branch` call over at most `max_branches` strings.
    """
    ids = list(digits)
    frontier = [([t], p) for t, p in zip(ids, first[ids].exp().tolist()) if p > floor]
    values: dict[int, float] = {}
    for depth in range(1, max_digits + 1):
        if not frontier:
            break
        following = branch([tokens for tokens, _ in frontier]).exp()
        grown = []
        for (tokens, p), row in zip(frontier, following):
            next_digits = row[ids].tolist()
            # At the last depth a longer number is not followed: its mass counts as ending here.
            ends = 1.0 if depth == max_digits else max(0.0, 1.0 - sum(next_digits))
            value = int("".join(str(digits[t]) for t in tokens))
            values[value] = values.get(value, 0.0) + p * ends
            if depth < max_digits:
                grown += [(tokens + [t], p * q) for t, q in zip(ids, next_digits) if p * q > floor]
        frontier = sorted(grown, key=lambda string: -string[1])[:max_branches]
    return values


def mean_number(branch: Callable, first, digits: dict[int, int]) -> tuple[list[int], dict[int, float]]:
    """The token ids of the rounded expected value of the number that starts at the next token, and the belief
    it was taken from ({value: probability}; empty when too flat to enumerate)."""
    values = number_distribution(branch, first, digits)
    if not values:  # a belief too flat to enumerate (every digit under FLOOR): the likeliest digit, as greedy would
        return [int(first.argmax())], {}
    mean = sum(v * p for v, p in values.items()) / sum(values.values())
    token_of = {digit: token for token, digit in digits.items()}
    return [token_of[int(c)] for c in str(int(mean + 0.5))], values


@dataclass(frozen=True)
class NumberBelief:
    """One number an engine wrote by expected value: where it sits in the text and the belief behind it."""

    start: int  # character offsets of the number in the generated text
    end: int
    values: dict[int, float]  # {value: probability}, as number_distribution returns it (empty: too flat)


def confidence(values: dict[int, float], tolerance: float) -> float:
    """The model's probability that the number lies within `tolerance` units of its expected value: near 1 for a
    peaked belief, near 2 * tolerance / range for a flat one. Mass pruned below FLOOR counts as outside, so an
    empty belief (too flat to enumerate) scores 0."""
    total = sum(values.values())
    if total <= 0:
        return 0.0
    mean = sum(v * p for v, p in values.items()) / total
    return min(1.0, sum(p for v, p in values.items() if abs(v - mean) <= tolerance))
