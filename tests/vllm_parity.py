"""Run inside vLLM's environment (tests/test_engine_vllm.py): one family's tiny checkpoint, hf against vllm.

    python tests/vllm_parity.py FAMILY OUT_DIR IMAGE.png

Builds the family's tiny random checkpoint in OUT_DIR, loads it with the hf engine and then with the vllm engine
in this one process (same transformers, same image processor), and prints one JSON line per engine: the greedy
report text, classify's yes-probabilities for two questions, and the engine's mean_numbers capability (for Gemma 3,
hf's also with causal attention over the image, which is what vLLM's CPU build computes).
"""

import json
import sys
from pathlib import Path

from PIL import Image

from cxrlm.models import load_model
from cxrlm.models.families import FAMILIES

QUESTIONS = ("Is there pneumonia? Answer yes or no.", "Is there cardiomegaly? Answer yes or no.")
NEW_TOKENS = 12
# vLLM's CPU attention kernels take head sizes of 32 and up (0.32.0: 32, 64, 80, ... 256, 512); the tiny builders'
# default is 64 wide over 4 heads, 16 each ("Unsupported CPU attention configuration: head_dim=16"): 2 heads here.
# Weights drawn 0.3 wide (not 0.02) make an opinionated random model: at 0.02 every family writes "\n" over and
# over, which two engines would agree on whatever they computed.
VLLM_TEXT = {"num_attention_heads": 2, "initializer_range": 0.3}


def hub_layout(folder: Path) -> None:
    """A SigLIP tower's weights under the names published checkpoints use (RadVLM's, MedGemma's):
    transformers 5 saves it as `vision_tower.embeddings...`, which vLLM 0.32's loader does not map ("no module or
    parameter named 'vision_tower.embeddings'"); published folders say `vision_tower.vision_model.embeddings...`."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    weights = load_file(path)
    renamed = {f"vision_tower.vision_model.{k.removeprefix('vision_tower.')}" if k.startswith("vision_tower.")
               and not k.startswith("vision_tower.vision_model.") else k: v for k, v in weights.items()}
    save_file(renamed, path, metadata={"format": "pt"})


def causal_yes(model, conversations, images) -> list[float]:
    """hf's yes-probabilities with image tokens attending causally, as vLLM's CPU attention does: Gemma 3 lets
    them see each other (token_type_ids), and vLLM 0.32's CPU attention backend lacks that ("mm_prefix")."""
    import torch

    engine, tokenizer = model.engine, model.engine.processor.tokenizer
    yes = sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "Yes")})
    no = sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in ("no", "No")})
    shares = []
    for conversation, imgs in zip(conversations, images):
        inputs = {k: v for k, v in engine._inputs([conversation], [imgs]).items() if k != "token_type_ids"}
        with torch.inference_mode():
            probs = torch.softmax(engine.model(**inputs).logits[0, -1].float(), -1)
        shares.append(float(probs[yes].sum() / (probs[yes].sum() + probs[no].sum())))
    return shares


def main(family: str, out_dir: str, image_path: str) -> None:
    folder = FAMILIES[family].build_tiny(Path(out_dir) / f"tiny-{family}", text=VLLM_TEXT)
    if family in ("llava_onevision", "gemma3"):  # the SigLIP-tower families
        hub_layout(folder)
    # A small pixel budget keeps the vision towers fast on 2 cores (cxrlm.json is the documented way to set it).
    (folder / "cxrlm.json").write_text(json.dumps({"min_pixels": 64 * 64, "max_pixels": 128 * 128}))
    image = Image.open(image_path).convert("RGB")
    for engine in ("hf", "vllm"):
        model = load_model(folder, device="cpu", engine=engine)
        turn = lambda text: [model.adapter.user_turn(text, 1)]  # noqa: E731
        text = model.engine.generate(turn("Write a radiology report for this chest X-ray."), [image], NEW_TOKENS).text
        conversations, images = [turn(q) for q in QUESTIONS], [[image], [image]]
        row = {"engine": engine, "text": text, "yes": model.engine.yes_probability(conversations, images),
               "mean_numbers": model.engine.capabilities.mean_numbers}
        if engine == "hf" and family == "gemma3":
            row["yes_causal"] = causal_yes(model, conversations, images)
        print(json.dumps(row), flush=True)
        model.engine.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
