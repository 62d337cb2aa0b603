"""The fast engine's scheduler: arrivals never stop running decodes, requests about one image share one prefill,
and classify / ground (expected-value boxes) neither copy the KV cache nor hold the model for a whole call.

Each test here fails on the scheduler before issue 36 (prefill of every waiting request inside one turn, one full
prefill per request, the cache deep-copied per digit, both locks held for a whole classify or ground call).
"""

import copy
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cxrlm.engines import hf as hf_module
from cxrlm.engines.batching import Request
from cxrlm.engines.fast import FastEngine


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(model, hf engine, fast engine) on a random tiny Qwen2.5-VL whose weights are made to wander (as in
    test_engine_fast), with end-of-sequence switched off in the fast engine so a long request keeps going."""
    from cxrlm.models import load_model
    from cxrlm.models.tiny import build_tiny_checkpoint

    model = load_model(build_tiny_checkpoint(tmp_path_factory.mktemp("sched") / "ckpt"), device="cpu")
    hf = model.engine
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in hf.model.parameters():
            if param.ndim == 2:
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    fast = FastEngine(hf.model, hf.processor, "cpu", max_batch=8, max_len=1024)
    fast.eos = set()
    yield model, hf, fast
    fast.close()


def _image(seed: int, size=(96, 96)):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)).convert("RGB")


def _messages(model, text: str) -> list[dict]:
    return [model.adapter.user_turn(text, 1)]


def _reference(hf, messages, image, max_new_tokens: int) -> list[int]:
    inputs = hf._inputs([messages], [[image]])
    with torch.inference_mode():
        out = hf.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
                                pad_token_id=hf.processor.tokenizer.pad_token_id)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _ticking(model, fast):
    """A long request that records the time of every text piece it streams; returns (handle, times)."""
    ticks: list[float] = []
    handle = fast.submit(Request(_messages(model, "Write a structured report."), [_image(0)], 400,
                                 on_text=lambda _piece: ticks.append(time.perf_counter())))
    deadline = time.monotonic() + 60
    while len(ticks) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(ticks) >= 3, "the long request never started decoding"
    return handle, ticks


def test_a_running_decode_keeps_producing_tokens_while_others_prefill(engines):
    """Six requests about six images arrive at once while one decodes: it gets tokens between their prefills
    (one prefill per scheduler turn), instead of waiting for all six."""
    model, _, fast = engines
    handle, ticks = _ticking(model, fast)
    finished: list[float] = []
    budget, fast.prefill_tokens = fast.prefill_tokens, 1  # each image's prefill fills a turn
    with fast.lock:  # the scheduler waits at its next forward, so it sees all six at once when this ends
        arrivals = [fast.submit(Request(_messages(model, f"Case {i}."), [_image(10 + i)], 1)) for i in range(6)]
    for arrival in arrivals:
        arrival.add_done_callback(lambda _f: finished.append(time.perf_counter()))
    try:
        for arrival in arrivals:
            assert arrival.result(timeout=60).new_tokens == 1
    finally:
        fast.prefill_tokens = budget
    handle.stop()
    handle.result(timeout=60)
    first, last = min(finished), max(finished)
    assert sum(first < t < last for t in ticks) >= 3


def test_requests_about_one_image_encode_it_once_and_still_match_hf(engines, monkeypatch):
    """Four requests about one picture (two separate uploads of it): one prefill of the image prefix, the four
    endings in one batch, and each answer token for token what hf's generate gives it alone."""
    model, hf, fast = engines
    encodes = []
    visual = fast.model.model.visual
    forward = visual.forward
    monkeypatch.setattr(visual, "forward", lambda *a, **k: encodes.append(1) or forward(*a, **k))
    upload, again = _image(42), _image(42)  # equal pixels, different objects
    jobs = [(_messages(model, text), image, n) for text, image, n in (
        ("Find abnormalities and support devices.", upload, 12), ("Impression: heart size", again, 7),
        ("yes no left right upper lower lobe", upload, 15), ("Write a structured report.", again, 10))]
    fast.prefixes.clear()
    with fast.lock:  # arrive together
        handles = [fast.submit(Request(messages, [image], n)) for messages, image, n in jobs]
    got = [h.result(timeout=60).token_ids for h in handles]
    assert len(encodes) == 1
    assert got == [_reference(hf, messages, image, n) for messages, image, n in jobs]
    # A later request about the same picture reuses the prefilled prefix: no encode at all.
    messages, image, n = jobs[1]
    encodes.clear()
    assert fast.generate(messages, [image], n).token_ids == got[1] and not encodes


def test_a_small_prefill_budget_admits_the_endings_over_several_turns(engines):
    model, hf, fast = engines
    budget, fast.prefill_tokens = fast.prefill_tokens, 1  # one request per turn
    steps = []
    step = fast._step
    fast._step = lambda: steps.append(len(fast.running)) or step()
    try:
        with fast.lock:
            handles = [fast.submit(Request(_messages(model, f"lobe {i}"), [_image(7)], 3)) for i in range(3)]
        assert [h.result(timeout=60).new_tokens for h in handles] == [3, 3, 3]
    finally:
        fast.prefill_tokens = budget
        del fast._step
    assert steps[:2] == [1, 2]  # decoding started after the first admission, not after all three


def test_classify_lets_decoding_run_between_its_forwards(engines):
    """classify (22 questions about one image) under fast: a running decode goes on meanwhile."""
    from cxrlm.models.base import CxrModel
    from cxrlm.types import Study, XrayImage

    model, _, fast = engines
    handle, ticks = _ticking(model, fast)
    ran = []
    original = fast.model.forward

    def slow_forward(*args, **kwargs):  # stretch each forward so the interleaving is certain, not a race
        ran.append(1)
        time.sleep(0.2)
        return original(*args, **kwargs)

    fast.model.forward = slow_forward
    try:
        start = time.perf_counter()
        study = Study(images=[XrayImage(np.asarray(_image(3).convert("L")))])
        CxrModel(model.name, model.profile, fast).classify(study)
        end = time.perf_counter()
    finally:
        del fast.model.forward
    handle.stop()
    handle.result(timeout=60)
    assert len(ran) >= 1 and sum(start < t < end for t in ticks) >= 1


# --- ground: expected-value boxes without copies of the cache ------------------------------------------------

def _deep_copy_branches(model, cache, prefixes, device, delta=0, chunk: int = 16):
    """The branch function before issue 36 (a deep copy of the whole cache, repeated per prefix), as the
    reference the copy-free one must equal."""
    rows = []
    for i in range(0, len(prefixes), chunk):
        part = prefixes[i:i + chunk]
        branch = copy.deepcopy(cache)
        branch.batch_repeat_interleave(len(part))
        length = cache.get_seq_length()
        positions = torch.arange(length, length + len(part[0]))[None].expand(len(part), -1) + delta
        logits = model(input_ids=torch.tensor(part, device=device), past_key_values=branch, position_ids=positions,
                       use_cache=True).logits
        rows.append(torch.log_softmax(logits[:, -1].float(), -1))
    return torch.cat(rows)


@pytest.fixture(scope="module")
def trained():
    """The shipped cxrlm-tiny: trained to write lung boxes, so ground's numbers are real beliefs."""
    from cxrlm.models import DEFAULT_MODEL_DIR, load_model

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("weights/cxrlm-tiny is not present")
    return load_model(device="cpu")


def _xray():
    from cxrlm.types import XrayImage

    size = np.linspace(0, 1, 256)
    chest = (np.outer(np.hanning(256), np.hanning(256)) * 200 + np.add.outer(size, size) * 20).astype(np.uint8)
    return XrayImage(pixels=chest, source="synthetic.png")


def test_ground_boxes_equal_the_deep_copy_version_and_copy_no_cache(trained, monkeypatch):
    from transformers import DynamicCache

    xray = _xray()
    monkeypatch.setattr(hf_module, "_branch_logprobs", _deep_copy_branches)
    reference = trained.predict(xray, "ground", phrase="right lung")
    monkeypatch.undo()
    copies = []
    deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda obj, *a: copies.append(type(obj)) or deepcopy(obj, *a))
    repeat = DynamicCache.batch_repeat_interleave
    monkeypatch.setattr(DynamicCache, "batch_repeat_interleave", lambda self, n: copies.append(n) or repeat(self, n))
    ours = trained.predict(xray, "ground", phrase="right lung")
    assert not [c for c in copies if c is DynamicCache or isinstance(c, int)]
    assert ours.boxes and ours.raw_text == reference.raw_text
    assert [b.xyxy for b in ours.boxes] == [b.xyxy for b in reference.boxes]
    assert [b.score for b in ours.boxes] == pytest.approx([b.score for b in reference.boxes], abs=1e-4)


def test_ground_under_fast_equals_hf_and_lets_decoding_run(trained):
    hf = trained.engine
    fast = FastEngine(hf.model, hf.processor, "cpu", max_batch=2, max_len=1024)
    fast.eos = set()
    try:
        from cxrlm.models.base import CxrModel

        expected = trained.predict(_xray(), "ground", phrase="right lung")
        handle, ticks = _ticking(trained, fast)
        forwards = []  # ground's whole-model forwards (the scheduler's decode steps call the decoder only)
        original = fast.model.forward
        fast.model.forward = lambda *a, **k: forwards.append(time.perf_counter()) or original(*a, **k)
        try:
            got = CxrModel(trained.name, trained.profile, fast).predict(_xray(), "ground", phrase="right lung")
        finally:
            del fast.model.forward
        handle.stop()
        handle.result(timeout=60)
    finally:
        fast.close()
    assert got.raw_text == expected.raw_text
    assert len(forwards) > 3 and sum(forwards[0] < t < forwards[-1] for t in ticks) >= 3


def test_branches_of_a_sliding_window_family_see_what_a_full_forward_sees(tmp_path):
    """Gemma 3's sliding layers keep only their last window of keys: the tree mask must follow it."""
    from cxrlm.models import load_model
    from cxrlm.models.families import FAMILIES

    model = load_model(FAMILIES["gemma3"].build_tiny(tmp_path / "g"), device="cpu")
    engine = model.engine
    inputs = engine._inputs([[model.adapter.user_turn("lobe left right " * 20, 1)]], [[_image(1, (64, 64))]])
    length = inputs["input_ids"].shape[1]
    assert length > engine.model.config.get_text_config().sliding_window  # the window has slid
    words = engine.processor.tokenizer.encode(" lobe left right upper heart", add_special_tokens=False)
    prefixes = [words[:3], words[2:5]]  # text tokens (a random id could be an image placeholder)
    with torch.inference_mode():
        cache = engine.model(**inputs, use_cache=True).past_key_values
        branched = hf_module._branch_logprobs(engine.model, cache, prefixes, "cpu")
        assert cache.get_seq_length() == length
        for prefix, row in zip(prefixes, branched, strict=True):
            extra = torch.tensor([prefix])
            full = {k: torch.cat([v, extra if k == "input_ids" else torch.ones_like(extra) if k == "attention_mask"
                                  else torch.zeros_like(extra)], 1) if hf_module.per_token(k, v, inputs["input_ids"])
                    else v for k, v in inputs.items()}
            expected = torch.log_softmax(engine.model(**full).logits[0, -1].float(), -1)
            torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)


def test_concurrent_ground_and_generate_do_not_disturb_each_other(engines):
    """Ground's forwards interleave with the scheduler's prefills, which reset the model's M-RoPE rope_deltas:
    ground must keep its own positions."""
    model, hf, fast = engines
    if not fast.capabilities.mean_numbers:
        pytest.skip("this tokenizer does not write one digit per token")
    messages, image = _messages(model, "Locate the right lung."), _image(5)
    alone = hf.generate_mean_numbers(messages, [image], 24)
    errors = []

    def traffic():
        try:
            for i in range(4):
                fast.generate(_messages(model, f"Case {i}."), [_image(20 + i, (160, 120))], 3)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=traffic)
    thread.start()
    together = fast.generate_mean_numbers(messages, [image], 24)
    thread.join(60)
    assert not errors and together.text == alone.text


def test_the_cli_makes_openmp_threads_wait_passively_unless_the_user_chose(monkeypatch):
    """Spinning OpenMP threads made ground 20x slower on the busy 2-core machine (19.9 s against 0.6 s)."""
    import os

    from cxrlm.cli import quiet_threads

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    quiet_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    quiet_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
