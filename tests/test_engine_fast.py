"""The fast engine against the reference `hf` engine: greedy tokens must be identical, token for token.

Tiny random checkpoints of each family, float32 on CPU. The random weights are made larger (seeded) so that greedy
decoding wanders over the vocabulary instead of repeating one token, which would hide cache or position bugs.
"""

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cxrlm.engines.base import TextStream
from cxrlm.engines.batching import Request, pick_tokens
from cxrlm.engines.fast import FastEngine
from cxrlm.errors import CxrlmError

PROMPTS = ("Find abnormalities and support devices.", "Impression: heart size", "yes no left right upper lower lobe",
           "Write a structured report.")
FAMILIES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision", "gemma3")


def _build(family: str, out_dir):
    from cxrlm.models.families import FAMILIES as RECORDS

    return RECORDS[family].build_tiny(out_dir)


@pytest.fixture(scope="module", params=FAMILIES)
def engines(request, tmp_path_factory):
    from cxrlm.models import load_model

    model = load_model(_build(request.param, tmp_path_factory.mktemp(request.param) / "ckpt"), device="cpu")
    hf = model.engine
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in hf.model.parameters():
            if param.ndim == 2:
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    fast = FastEngine(hf.model, hf.processor, "cpu", max_batch=4, max_len=512)
    yield model, hf, fast
    fast.close()


def _image(seed: int = 0, size=(200, 160)):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def _messages(model, text: str) -> list[dict]:
    return [model.adapter.user_turn(text, 1)]


def _reference(hf, messages, image, max_new_tokens: int) -> list[int]:
    """The hf engine's own inputs and transformers' greedy generate: the token ids HFEngine.generate decodes."""
    inputs = hf._inputs([messages], [[image]])
    with torch.inference_mode():
        out = hf.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=hf.processor.tokenizer.pad_token_id)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def test_batch_one_matches_hf_token_for_token(engines):
    model, hf, fast = engines
    for index, prompt in enumerate(PROMPTS[:2]):
        messages, image = _messages(model, prompt), _image(index)
        expected = _reference(hf, messages, image, 32)
        got = fast.generate(messages, [image], 32)
        assert got.token_ids == expected and got.new_tokens == len(expected)
        if index == 0:
            assert got.text == hf.generate(messages, [image], 32).text


def test_concurrent_requests_joining_late_match_hf(engines):
    model, hf, fast = engines
    lengths = (32, 9, 20, 14, 25, 6)  # six requests through four slots: some wait for a slot, then join
    jobs = [(_messages(model, PROMPTS[i % len(PROMPTS)] + " lobe" * i), _image(i), n) for i, n in enumerate(lengths)]
    expected = [_reference(hf, messages, image, n) for messages, image, n in jobs]
    handles = []
    for messages, image, n in jobs:
        handles.append(fast.submit(Request(messages, [image], n)))
        time.sleep(0.01)  # later requests join a batch that is already decoding
    assert [h.result(timeout=60).token_ids for h in handles] == expected


def test_sliding_window_layers_match_past_the_window(engines):
    """Gemma 3's sliding layers (window 64 here): a prompt longer than the window, and an answer that crosses it."""
    model, hf, fast = engines
    if "sliding_attention" not in (getattr(fast.text_config, "layer_types", None) or ()):
        pytest.skip("no sliding-window layers in this family")
    for text, new_tokens in (("short", 80), ("lobe left right " * 30, 24)):
        messages, image = _messages(model, text), _image(size=(100, 100))
        assert fast.generate(messages, [image], new_tokens).token_ids == _reference(hf, messages, image, new_tokens)


def test_streamed_pieces_add_up_to_the_text(engines):
    model, _, fast = engines
    pieces = []
    got = fast.generate(_messages(model, PROMPTS[3]), [_image(5)], 24, on_text=pieces.append)
    assert "".join(pieces) == got.text
    assert got.first_token_s > 0 and got.generate_s > 0


def test_yes_probability_is_hf_s(engines):
    model, hf, fast = engines
    conversations = [_messages(model, "pleural effusion? yes or no")]
    assert fast.yes_probability(conversations, [[_image()]]) == pytest.approx(
        hf.yes_probability(conversations, [[_image()]]))


def test_classify_prefills_the_shared_prefix_once_and_equals_one_question_at_a_time(engines, monkeypatch):
    """classify's 22 questions around one image: the image encoded and the common prefix prefilled once, the
    endings scored over its cache, equal to scoring each whole conversation on its own."""
    from cxrlm.types import Study, XrayImage

    model, hf, _ = engines
    asked, shared = [], []
    yes_probability, shared_prefix_logits = hf.yes_probability, hf._shared_prefix_logits

    def spy(conversations, images):
        asked.append((conversations, images))
        return yes_probability(conversations, images)

    monkeypatch.setattr(hf, "yes_probability", spy)
    monkeypatch.setattr(hf, "_shared_prefix_logits", lambda *args: shared.append(shared_prefix_logits(*args))
                        or shared[-1])
    model.classify(Study(images=[XrayImage(np.asarray(_image(3).convert("L")))]))
    (conversations, images), = asked
    # The shared path ran, for every question at once; MedGemma's prompt asks before the image, so Gemma 3's image
    # tokens attend to each question (and differ per question): it scores whole conversations.
    assert len(conversations) > 10 and (shared[0] is None) == (model.profile.name == "medgemma")
    together = yes_probability(conversations, images)
    alone = [yes_probability([c], [i])[0] for c, i in zip(conversations, images, strict=True)]
    assert shared[-1] is None  # the one-conversation calls took the whole-conversation path
    assert together == pytest.approx(alone, abs=1e-4)
    assert len({round(p, 4) for p in together}) > 1  # the endings really differ


def test_predict_batch_through_the_fast_engine_equals_one_by_one_on_hf(engines):
    from cxrlm.models.base import CxrModel
    from cxrlm.types import XrayImage

    model, _, fast = engines
    images = [XrayImage(np.asarray(_image(i).convert("L"))) for i in range(3)]
    batched = CxrModel(model.name, model.profile, fast).predict_batch(images, "reason", max_new_tokens=12)
    one_by_one = [model.predict(image, "reason", max_new_tokens=12) for image in images]
    assert [o.raw_text for o in batched] == [o.raw_text for o in one_by_one]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from cxrlm.models import load_model

    model = load_model(_build("qwen2_5_vl", tmp_path_factory.mktemp("q") / "ckpt"), device="cpu")
    fast = FastEngine(model.engine.model, model.engine.processor, "cpu", max_batch=2, max_len=512)
    yield model, fast
    fast.close()


def test_seeded_sampling_repeats_and_differs_from_another_seed(qwen):
    model, fast = qwen

    def ask(seed):
        request = Request(_messages(model, PROMPTS[0]), [_image(size=(64, 64))], 16, temperature=5.0, top_k=200,
                          top_p=0.99, seed=seed)
        return fast.submit(request).result(timeout=60).token_ids

    assert ask(1) == ask(1)
    assert ask(1) != ask(2)


def test_prompt_longer_than_the_cache_is_refused_at_submit(qwen):
    model, fast = qwen
    with pytest.raises(CxrlmError, match="does not fit"):
        fast.generate(_messages(model, PROMPTS[0]), [_image(size=(64, 64))], 500)
    assert fast.generate(_messages(model, PROMPTS[0]), [_image(size=(64, 64))], 4).new_tokens == 4


def test_a_one_token_request_reports_its_first_token_time(qwen):
    model, fast = qwen
    out = fast.generate(_messages(model, PROMPTS[0]), [_image(size=(64, 64))], 1)
    assert out.new_tokens == 1 and 0 < out.first_token_s < 30 and out.queue_s >= 0


def test_failing_callback_ends_its_own_request(qwen):
    model, fast = qwen

    def broken(_text):
        raise RuntimeError("client went away")

    bad = fast.submit(Request(_messages(model, PROMPTS[1]), [_image(size=(64, 64))], 8, on_text=broken))
    good = fast.submit(Request(_messages(model, PROMPTS[1]), [_image(size=(64, 64))], 8))
    with pytest.raises(RuntimeError, match="client went away"):
        bad.result(timeout=60)
    assert good.result(timeout=60).new_tokens == 8


def test_stop_ends_a_request_at_a_token_boundary(qwen):
    model, fast = qwen
    started = threading.Event()
    handle = fast.submit(Request(_messages(model, PROMPTS[2]), [_image(size=(64, 64))], 200, on_text=lambda _t: started.set()))
    started.wait(30)
    handle.stop()
    assert handle.result(timeout=60).new_tokens < 200


def test_bad_sampling_settings_are_refused():
    with pytest.raises(ValueError):
        Request([], max_new_tokens=0)
    with pytest.raises(ValueError):
        Request([], top_p=0.0)


def test_repetition_penalty_demotes_seen_tokens():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    seen = torch.tensor([[True, False, False]])
    assert pick_tokens(logits, [Request([])], [None], seen, 1.2).tolist() == [1]
    assert pick_tokens(logits, [Request([])], [None], seen, 1.0).tolist() == [0]


def test_text_stream_holds_back_split_characters():
    class Bytes:  # a byte-level tokenizer: one token per UTF-8 byte
        def decode(self, tokens, skip_special_tokens=True):
            return bytes(tokens).decode("utf-8", errors="replace")

    pieces = []
    stream = TextStream(Bytes(), pieces.append)
    for byte in "pneumothorax ✓ é".encode():
        stream.push(byte)
    assert stream.finish() == "pneumothorax ✓ é"
    assert "".join(pieces) == "pneumothorax ✓ é" and all("\ufffd" not in p for p in pieces)


def test_load_model_picks_the_engine(tiny_checkpoint):
    from cxrlm.errors import ModelLoadError
    from cxrlm.models import load_model

    model = load_model(tiny_checkpoint, device="cpu", engine="fast", max_batch=2, max_len=600)
    try:
        assert isinstance(model.engine, FastEngine) and model.engine.max_batch == 2
    finally:
        model.engine.close()
    with pytest.raises(ModelLoadError, match="unknown engine"):
        load_model(tiny_checkpoint, engine="sglang")  # not an engine of cxrlm's (vllm is, since issue 36)
    with pytest.raises(ModelLoadError, match="apply to the fast or remote engine only"):
        load_model(tiny_checkpoint, device="cpu", max_batch=2)


def test_requests_about_different_images_arriving_together_are_prefilled_in_one_batch(engines, monkeypatch):
    """Three unseen images at once: one right-padded forward over the three whole prompts, each answer still hf's
    token for token."""
    model, hf, fast = engines
    jobs = [(_messages(model, PROMPTS[i] + " lobe" * i), _image(30 + i, (96 + 32 * i, 80)), 10) for i in range(3)]
    expected = [_reference(hf, messages, image, n) for messages, image, n in jobs]
    forwards = []
    forward = fast.model.forward
    monkeypatch.setattr(fast.model, "forward", lambda *a, **k: forwards.append(k["input_ids"].shape[0])
                        or forward(*a, **k))
    monkeypatch.setattr(fast, "prefill_tokens", 4096)  # room for all three prompts in one turn
    forwards.clear()
    held = []
    fast.pending.put = held.append  # preprocessed, but kept from the scheduler until all three are
    try:
        handles = [fast.submit(Request(messages, [image], n)) for messages, image, n in jobs]
    finally:
        del fast.pending.put
    with fast.pending.mutex:  # all three reach the scheduler at once
        fast.pending.queue.extend(held)
        fast.pending.not_empty.notify()
    assert [h.result(timeout=60).token_ids for h in handles] == expected
    # LLaVA-OneVision cuts these three images into different numbers of crops, which do not stack.
    assert forwards == ([1, 1, 1] if fast.model.config.model_type == "llava_onevision" else [3])
