"""What the transformers-native families share: loading a local folder and the content-list chat turns."""

from pathlib import Path

from cxrlm.engines.hf import HFEngine


def load_engine(model_dir: Path, device: str, dtype, **processor_kwargs) -> HFEngine:
    """AutoProcessor + AutoModelForImageTextToText from a local folder, never the hub."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True, **processor_kwargs)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    return HFEngine(model, processor, device)


def images_first_turn(text: str, n_images: int) -> dict:
    """A user turn with the images before the text (Qwen-VL, LLaVA-OneVision); only the first turn has images."""
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}


def text_first_turn(text: str, n_images: int) -> dict:
    """A user turn with the text before the images (MedGemma's model card)."""
    return {"role": "user", "content": [{"type": "text", "text": text}] + [{"type": "image"}] * n_images}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}
