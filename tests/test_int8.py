"""--quantize int8 (cxrlm.models.int8): int8 language-model weights stay close to fp32 on cxrlm-tiny and real images."""

import pytest

from cxrlm.errors import ModelLoadError
from cxrlm.models import DEFAULT_MODEL_DIR, load_model


def test_int8_linear_matches_fp32_linear_within_a_quantization_step():
    import torch

    from cxrlm.models.int8 import Int8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(3, 5, 64)
    quantized = Int8Linear(linear)
    with torch.no_grad():
        exact, approx = linear(x), quantized(x)
    assert approx.shape == exact.shape and approx.dtype == torch.float32
    error = (approx - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.02  # quantized (not a copy of fp32), and within about one int8 step
    assert quantized.weight.shape == linear.weight.shape and quantized.weight.dtype == torch.qint8


@pytest.fixture(scope="module")
def pair():
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("weights/cxrlm-tiny is not installed")
    return load_model(None, device="cpu"), load_model(None, device="cpu", quantize="int8")


def test_int8_replaces_the_language_models_linears_and_head_but_not_the_vision_tower(pair):
    from torch import nn

    from cxrlm.models.int8 import Int8Linear

    model = pair[1].engine.model
    assert isinstance(model.get_output_embeddings(), Int8Linear)
    assert not any(isinstance(m, nn.Linear) for m in model.get_decoder().modules())
    assert any(isinstance(m, nn.Linear) for m in model.model.visual.modules())
    assert not pair[1].engine.capabilities.heatmaps  # no gradients through int8 layers


def test_int8_answers_stay_close_to_fp32_on_real_images(pair, fixture_pngs):
    """Measured on the 10 fixture images (2026-12-02): next-token logits within 0.8% of the largest logit,
    classify probabilities within 0.005, 8 of 10 reports word for word the same (the others part at the last word)."""
    import torch

    from cxrlm.io import load_image
    from cxrlm.types import Study

    if not fixture_pngs:
        pytest.skip("no sample images in ../shared/data")
    fp32, int8 = pair
    same = 0
    for path in fixture_pngs[:4]:
        study = Study(images=[load_image(path)])
        conversation = [fp32._with_system([fp32.first_turn("Write the report.", study)])]
        inputs = fp32.engine._inputs(conversation, [[study.images[0].to_pil()]])
        with torch.inference_mode():
            exact = fp32.engine.model(**inputs).logits[0, -1]
            approx = int8.engine.model(**inputs).logits[0, -1]
        assert 0 < (exact - approx).abs().max() / exact.abs().max() < 0.02
        a, b = fp32.classify(study).probabilities, int8.classify(study).probabilities
        assert max(abs(a[k] - b[k]) for k in a) < 0.02
        same += fp32.predict(study, "report").raw_text == int8.predict(study, "report").raw_text
    assert same >= 3


@pytest.mark.parametrize("options, message", [
    ({"quantize": "int4"}, "unknown quantize"),
    ({"quantize": "int8", "engine": "vllm"}, "hf and fast engines"),
    ({"quantize": "int8", "dtype": "bf16"}, "fp32"),
])
def test_int8_refuses_what_it_cannot_do_in_one_line(options, message):
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("weights/cxrlm-tiny is not installed")
    with pytest.raises(ModelLoadError, match=message) as err:
        load_model(None, device="cpu", **options)
    assert "\n" not in str(err.value)


def test_int8_refuses_a_gpu():
    import torch

    from cxrlm.models.int8 import quantize

    with pytest.raises(ModelLoadError, match="CPU only"):
        quantize(torch.nn.Module(), "cuda", torch.bfloat16)


def test_fast_engine_runs_int8_weights_with_the_hf_engines_greedy_answer(pair, fixture_pngs):
    from cxrlm.io import load_image
    from cxrlm.types import Study

    if not fixture_pngs:
        pytest.skip("no sample images in ../shared/data")
    fast = load_model(None, device="cpu", engine="fast", quantize="int8")
    study = Study(images=[load_image(fixture_pngs[0])])
    try:
        assert fast.predict(study, "report").raw_text == pair[1].predict(study, "report").raw_text
    finally:
        fast.engine.close()
