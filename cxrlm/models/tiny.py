"""Build a small Qwen2.5-VL checkpoint folder locally: config, BPE tokenizer, processor, safetensors.

The folder has exactly the layout of a Hugging Face Qwen2.5-VL checkpoint such as NV-Reason-CXR-3B, so tests
(random weights, a few hundred kB) and the shipped cxrlm-tiny model (trained weights) go through the same
loading and generation path as the real 3B model. Nothing is downloaded: the tokenizer is trained here with
`tokenizers` on radiology text.
"""

from collections.abc import Iterable
from pathlib import Path

from cxrlm.pathologies import CHEXPERT14, NIH14

# Qwen2-VL special tokens, in the order the real vocabulary has them.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The chat template Qwen2.5-VL-Instruct checkpoints ship (NV-Reason-CXR-3B keeps it).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A little radiology text so that even the random test checkpoint tokenizes the project's prompts sensibly.
SEED_CORPUS = (
    "You are a helpful assistant.",
    "Find abnormalities and support devices.",
    "Provide differentials. Write a structured report.",
    "<think> Systematic review: airway, lungs, pleura, heart, mediastinum, bones, devices. </think>",
    "<answer> No Finding </answer>",
    "Findings: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.",
    "Impression: No acute cardiopulmonary abnormality.",
    'Locate the right lung. {"bbox_2d": [12, 30, 245, 480], "label": "right lung"} [0.12, 0.30, 0.45, 0.80]',
    "yes no left right upper lower lobe mild moderate severe bilateral small large",
    ", ".join(CHEXPERT14),
    ", ".join(NIH14),
)

# Qwen2's pre-tokenizer: words, single digits (so box coordinates are spelled digit by digit), punctuation runs.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
TINY_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, fullatt_block_indexes=[1])


def train_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 1024,
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS,
    chat_template: str = CHAT_TEMPLATE,
):
    """A byte-level BPE tokenizer (Qwen2's kind) trained on `corpus`, wrapped as a transformers tokenizer.

    `special_tokens` starts with the pad/end-of-text token; other Qwen2-based families (LLaVA-OneVision, Qwen3-VL)
    pass their own list and chat template.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    return Qwen2Tokenizer(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(special_tokens[1:]),
        chat_template=chat_template,
        model_max_length=32768,
    )


def build_processor(tokenizer, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448, patch_size: int = 14):
    """Qwen2.5-VL processor. Visual tokens are about H*W/(2*patch_size)^2: `max_pixels` sets the token budget."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=patch_size),
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=patch_size),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, text: dict | None = None, vision: dict | None = None):
    from transformers import Qwen2_5_VLConfig

    text = {**TINY_TEXT, **(text or {})}
    vision = {**TINY_VISION, **(vision or {})}
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    # M-RoPE splits each head's rotary half into (temporal, height, width) sections, as 16/24/24 does for 128.
    half = head_dim // 2
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        text_config=dict(
            text,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(vision, out_hidden_size=text["hidden_size"]),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_tiny_checkpoint(
    out_dir: str | Path,
    corpus: Iterable[str] = SEED_CORPUS,
    vocab_size: int = 1024,
    text: dict | None = None,
    vision: dict | None = None,
    max_pixels: int = 448 * 448,
    patch_size: int = 14,
    seed: int = 0,
) -> Path:
    """Write a random-weight Qwen2.5-VL checkpoint folder (the layout NV-Reason-CXR-3B ships) and return it."""
    import torch
    import transformers
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    transformers.utils.logging.disable_progress_bar()

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus, vocab_size)
    processor = build_processor(tokenizer, max_pixels=max_pixels, patch_size=patch_size)
    config = build_config(tokenizer, text, {"patch_size": patch_size, **(vision or {})})
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.text_config.eos_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir
