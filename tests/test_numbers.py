"""Expected-value decoding of box coordinates (cxrlm.engines.numbers and HFEngine.generate_mean_numbers)."""

import pytest
import torch
from scripted_engine import ScriptedEngine

from cxrlm.engines.hf import _branch_logprobs, rope_delta
from cxrlm.engines.numbers import digit_tokens, mean_number, number_distribution
from cxrlm.models.base import CxrModel
from cxrlm.models.families import QWEN2_5_VL
from cxrlm.models.profiles import PROFILES

VOCAB = 12  # tokens 0-9 are the digits 0-9; 10 is "," and 11 is "]"
DIGITS = {d: d for d in range(10)}


def belief(strings: dict[str, float]):
    """`first` and `branch` of a model whose next number is one of `strings` with the given probabilities."""

    def next_logprobs(prefix: str):
        mass = torch.full((VOCAB,), 1e-12)
        for text, p in strings.items():
            if text.startswith(prefix):
                mass[int(text[len(prefix)]) if len(text) > len(prefix) else 10] += p
        return (mass / mass.sum()).log()

    def branch(prefixes):
        return torch.stack([next_logprobs("".join(map(str, tokens))) for tokens in prefixes])

    return next_logprobs(""), branch


def likely(values: dict[int, float]) -> dict[int, float]:
    return {v: round(p, 6) for v, p in values.items() if p > 1e-6}


def test_the_distribution_is_the_models_belief_over_whole_numbers():
    first, branch = belief({"56": 0.5, "61": 0.3, "7": 0.2, "100": 0.0})
    values = number_distribution(branch, first, DIGITS)
    assert likely(values) == {56: 0.5, 61: 0.3, 7: 0.2}


def test_the_answer_is_the_rounded_mean_not_the_greedy_digits():
    # Greedy writes "5" (0.5 > 0.3, 0.2) then "6": 56. The mean is 0.5*56 + 0.3*61 + 0.2*7 = 47.7.
    first, branch = belief({"56": 0.5, "61": 0.3, "7": 0.2})
    assert mean_number(branch, first, DIGITS)[0] == [4, 8]


def test_three_digit_numbers_and_numbers_that_are_prefixes_of_others():
    first, branch = belief({"10": 0.4, "100": 0.6})
    assert likely(number_distribution(branch, first, DIGITS)) == {10: 0.4, 100: 0.6}
    assert mean_number(branch, first, DIGITS)[0] == [6, 4]


def test_a_number_longer_than_max_digits_ends_at_max_digits():
    first, branch = belief({"12345": 1.0})
    assert likely(number_distribution(branch, first, DIGITS, max_digits=4)) == {1234: 1.0}


def test_tokenizers_that_merge_digits_are_refused(tiny_model):
    class Merging:
        def encode(self, text, add_special_tokens=False):
            return [0, 1, 2, 3, 4]  # "01", "23", ...: five tokens for ten digits

        def decode(self, ids):
            return "01"

    assert digit_tokens(Merging()) is None
    digits = digit_tokens(tiny_model.engine.processor.tokenizer)
    assert sorted(digits.values()) == list(range(10))


def _prompt(model, image):
    engine = model.engine
    return engine._inputs([[QWEN2_5_VL.user_turn("Locate the right lung.", 1)]], [[image.to_pil()]])


def test_branches_see_what_a_full_forward_sees(tiny_model, xray):
    """A branch continues a copy of the KV cache at the right (M-RoPE) positions: its next-token log-probabilities
    equal those of one uncached forward over prompt + prefix."""
    engine = tiny_model.engine
    inputs = _prompt(tiny_model, xray)
    prefixes = [[5, 7], [9, 2], [3, 3]]
    with torch.inference_mode():
        cache = engine.model(**inputs, use_cache=True).past_key_values
        branched = _branch_logprobs(engine.model, cache, prefixes, "cpu", rope_delta(engine.model))
        assert cache.get_seq_length() == inputs["input_ids"].shape[1]  # the real continuation is untouched
        for prefix, row in zip(prefixes, branched):
            full = dict(inputs, input_ids=torch.cat([inputs["input_ids"], torch.tensor([prefix])], 1),
                        attention_mask=torch.ones(1, inputs["input_ids"].shape[1] + 2, dtype=torch.long),
                        mm_token_type_ids=torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, 2)))
            expected = torch.log_softmax(engine.model(**full).logits[0, -1].float(), -1)
            torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)


def test_decoding_loop_is_greedy_generate_when_numbers_are_greedy(tiny_model, xray, monkeypatch):
    """With the mean replaced by the likeliest digit, the hand-written loop writes exactly what `generate` does."""
    from cxrlm.engines import numbers

    monkeypatch.setattr(numbers, "mean_number", lambda branch, first, digits: ([int(first.argmax())], {}))
    engine, messages = tiny_model.engine, [QWEN2_5_VL.user_turn("Locate the right lung.", 1)]
    pieces = []
    ours = engine.generate_mean_numbers(messages, [xray.to_pil()], 12, on_text=pieces.append)
    theirs = engine.generate(messages, [xray.to_pil()], 12)
    assert ours.text == theirs.text and ours.new_tokens == theirs.new_tokens
    assert "".join(pieces) == ours.text


@pytest.mark.parametrize("profile, task, expected", [
    ("m4cxr", "ground", ["mean"]),  # int100
    ("qwen3-vl", "ground", ["mean"]),  # int1000
    ("medgemma-1.5", "ground", ["mean"]),  # int1000_yxyx
    ("radvlm", "ground", ["greedy"]),  # 0-1 fractions: their digits are not whole numbers
    ("m4cxr", "reason", ["greedy"]),  # numbers in prose are not coordinates
])
def test_grounding_with_whole_number_boxes_uses_the_mean(xray, profile, task, expected):
    engine = ScriptedEngine("[10, 20, 50, 80]", mean_numbers=True)
    CxrModel("scripted", PROFILES[profile], engine).predict(xray, task, phrase="right lung")
    assert engine.decoders == expected


def test_greedy_when_the_engine_cannot_decode_means(xray):
    engine = ScriptedEngine("[10, 20, 50, 80]", mean_numbers=False)  # as with a tokenizer that merges digits
    out = CxrModel("scripted", PROFILES["m4cxr"], engine).predict(xray, "ground", phrase="right lung")
    assert engine.decoders == ["greedy"] and out.boxes


def test_a_flat_belief_keeps_only_the_likeliest_strings():
    first, branch = belief({f"{v}": (1.0 if v == 42 else 0.5) for v in range(10, 100)})
    calls = []

    def counted(prefixes):
        calls.append(len(prefixes))
        return branch(prefixes)

    values = number_distribution(counted, first, DIGITS, max_branches=5)
    assert max(calls) <= 9 and 42 in likely(values)  # 9 first digits, then the 5 likeliest two-digit strings
    assert len(likely(values)) == 5
