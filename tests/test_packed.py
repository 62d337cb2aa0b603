"""oneDNN-packed fp32 weights (cxrlm.engines.packed): the same answers as nn.Linear, through the fast engine by default
on a CPU."""

import numpy as np
import pytest
import torch
from torch import nn

from cxrlm.engines import packed

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")


def test_packed_linear_matches_nn_linear_at_decode_and_prefill_shapes():
    torch.manual_seed(0)
    linear = nn.Linear(96, 200)
    layer = packed.PackedLinear(linear)
    with torch.inference_mode():
        for shape in ((1, 96), (4, 96), (2, 37, 96), (3, 1, 96)):
            x = torch.randn(shape)
            exact, got = linear(x), layer(x)
            assert got.shape == exact.shape and got.dtype == torch.float32
            assert torch.allclose(got, exact, rtol=1e-5, atol=1e-5)
        x = torch.randn(5, 2, 96).transpose(0, 1)  # not contiguous
        assert torch.allclose(layer(x), linear(x), rtol=1e-5, atol=1e-5)
    assert packed.PackedLinear(nn.Linear(8, 4, bias=False))(torch.ones(1, 8)).shape == (1, 4)
    with pytest.raises(RuntimeError, match="inference only"):  # no backward in oneDNN's kernel: never a wrong gradient
        layer(torch.randn(1, 96, requires_grad=True))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """cxrlm-tiny's architecture with random weights, loaded twice: as stored, and packed."""
    from cxrlm.models import load_model
    from cxrlm.models.families import FAMILIES

    folder = FAMILIES["qwen2_5_vl"].build_tiny(tmp_path_factory.mktemp("packed") / "ckpt")
    plain, repacked = load_model(folder, device="cpu"), load_model(folder, device="cpu")
    assert packed.can_pack(repacked.engine.model, "cpu")
    return plain, repacked, packed.pack(repacked.engine.model)


def test_pack_replaces_every_language_model_linear_and_the_head_but_not_the_vision_tower(pair):
    plain, repacked, count = pair
    model = repacked.engine.model
    assert count == sum(type(m) is nn.Linear for m in plain.engine.model.get_decoder().modules()) + 1
    assert not any(type(m) is nn.Linear for m in model.get_decoder().modules())
    assert isinstance(model.get_output_embeddings(), packed.PackedLinear)
    assert any(type(m) is nn.Linear for m in model.model.visual.modules())
    assert packed.pack(model) == 0  # nothing left to pack


def test_packed_model_gives_the_same_logits_and_greedy_answer(pair):
    from PIL import Image

    plain, repacked, _ = pair
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (160, 200), dtype=np.uint8)).convert("RGB")
    messages = [plain.adapter.user_turn("Describe the findings.", 1)]
    inputs = plain.engine._inputs([messages], [[image]])
    with torch.inference_mode():
        exact = plain.engine.model(**inputs).logits
        got = repacked.engine.model(**inputs).logits
    assert (got - exact).abs().max() <= 1e-4 * exact.abs().max()
    a = plain.engine.generate(messages, [image], 16)
    b = repacked.engine.generate(messages, [image], 16)
    assert a.text == b.text and a.new_tokens == b.new_tokens


def test_packing_applies_to_fp32_on_a_cpu_only(pair):
    model = pair[0].engine.model
    assert packed.can_pack(model, "cpu") and not packed.can_pack(model, "cuda:0")
    model.to(torch.bfloat16)
    try:
        assert not packed.can_pack(model, "cpu")
    finally:
        model.to(torch.float32)


def test_the_fast_engine_packs_on_a_cpu_unless_told_not_to(tmp_path):
    from cxrlm.engines.fast import FastEngine
    from cxrlm.models import load_model
    from cxrlm.models.families import FAMILIES

    folder = FAMILIES["qwen2_5_vl"].build_tiny(tmp_path / "ckpt")
    plain = load_model(folder, device="cpu")
    FastEngine(plain.engine.model, plain.engine.processor, "cpu", max_batch=2, max_len=256, pack_weights=False).close()
    assert isinstance(plain.engine.model.get_output_embeddings(), nn.Linear)
    fast = load_model(folder, device="cpu", engine="fast", max_batch=2, max_len=256)
    assert isinstance(fast.engine.model.get_output_embeddings(), packed.PackedLinear)
    fast.engine.close()


def test_shipped_model_through_the_packed_fast_engine_answers_as_hf_on_real_images(fixture_pngs):
    """Measured on the 10 fixture images (2026-12-02): 10 of 10 reports identical, classify within 1e-4."""
    from cxrlm.io import load_image
    from cxrlm.models import DEFAULT_MODEL_DIR, load_model
    from cxrlm.types import Study

    if not (DEFAULT_MODEL_DIR / "config.json").is_file() or not fixture_pngs:
        pytest.skip("needs weights/cxrlm-tiny and the sample images of ../shared/data")
    hf, fast = load_model(None, device="cpu"), load_model(None, device="cpu", engine="fast")
    try:
        assert isinstance(fast.engine.model.get_output_embeddings(), packed.PackedLinear)
        for path in fixture_pngs[:3]:
            study = Study(images=[load_image(path)])
            assert fast.predict(study, "report").raw_text == hf.predict(study, "report").raw_text
            expected = {label.name: label.probability for label in hf.predict(study, "classify").labels}
            got = {label.name: label.probability for label in fast.predict(study, "classify").labels}
            assert got.keys() == expected.keys()
            assert all(abs(got[name] - expected[name]) <= 1e-3 for name in got)
    finally:
        fast.engine.close()
