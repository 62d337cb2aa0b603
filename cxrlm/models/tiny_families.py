"""Build small random-weight checkpoint folders of the other supported families: LLaVA-OneVision, Gemma 3, Qwen3-VL.

Each folder has the layout of the real checkpoint (config.json with the family's model_type, tokenizer, processor,
chat template, safetensors), so tests exercise the same `load_model` path as RadVLM, MedGemma or Qwen3-VL would.
Nothing is downloaded: tokenizers are trained here (see `cxrlm.models.tiny.train_tokenizer`), transformers builds
every model from its config class. The weights are random: these folders test plumbing, never answers.
Qwen2.5-VL (NV-Reason-CXR) lives in `cxrlm.models.tiny`; each family's record (cxrlm.models.families) names its
builder.
"""

from collections.abc import Iterable
from pathlib import Path

from cxrlm.models.tiny import CHAT_TEMPLATE, SEED_CORPUS, SPECIAL_TOKENS, TINY_TEXT, train_tokenizer

FAMILY_CORPUS = SEED_CORPUS + (
    "You are an expert radiologist.",
    "Write a radiology report for this Chest X-ray. Please locate the following sentence:",
    "radiology image: Which of the following findings are present in the radiology image? Findings:",
    "Based on the previous conversation, provide a description of the findings in the radiology image.",
)

# --- LLaVA-OneVision (RadVLM): Qwen2 text, SigLIP vision, "anyres" tiling --------------------------------------

# The qwen_1_5 conversation LLaVA-OneVision was trained with: images as <image> lines before the user's text.
# The assistant's turn sits in {% generation %} markers (rendering nothing at inference) so that SFT's assistant-only
# loss can mask the rest, as TRL's training variants of the real templates do (see docs/TRAINING.md).
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endgeneration %}"
    "{% elif message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}<image>\n"
    "{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_llava_onevision(out_dir: str | Path, corpus: Iterable[str] = FAMILY_CORPUS, seed: int = 0,
                          text: dict | None = None) -> Path:
    """A random LLaVA-OneVision folder (RadVLM's layout): 32 px SigLIP tiles, up to a 2x2 anyres grid. `text`
    overrides the language model's TINY_TEXT settings."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = train_tokenizer(corpus, 1024, ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
                                LLAVA_ONEVISION_TEMPLATE)
    tile, patch = 32, 8
    pinpoints = [[tile * r, tile * c] for r in (1, 2) for c in (1, 2)]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": tile, "width": tile},
                                                     image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": tile, "width": tile}),
        tokenizer=tokenizer,
        num_image_tokens=(tile // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = LlavaOnevisionConfig(
        text_config=dict(TINY_TEXT, **(text or {}), model_type="qwen2", vocab_size=len(tokenizer),
                         max_position_embeddings=4096,
                         eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>")),
        vision_config={"model_type": "siglip_vision_model", "image_size": tile, "patch_size": patch,
                       "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return _save(out_dir, LlavaOnevisionForConditionalGeneration, config, processor, ids("<|im_end|>"),
                 ids("<|endoftext|>"), seed)


# --- Gemma 3 (MedGemma): SigLIP vision pooled to a fixed token count, a square resize ---------------------------

GEMMA3_SPECIAL = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>")

# Gemma 3's template: a system message is folded into the first user turn; the model speaks as "model" (its turn
# in {% generation %} markers, as above).
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = (messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text']) + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{% if role == 'model' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'text') %}{{ item['text'] | trim }}{% endfor %}"
    "{% endif %}<end_of_turn>\n{% endgeneration %}"
    "{% elif message['content'] is string %}{{ message['content'] | trim }}<end_of_turn>\n"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def _gemma3_tokenizer(corpus: Iterable[str]):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=list(GEMMA3_SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        additional_special_tokens=list(GEMMA3_SPECIAL[3:]),
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
        chat_template=GEMMA3_TEMPLATE, model_max_length=8192,
    )
    # Runs of 1-4 newlines are single tokens in Gemma's vocabulary, and vLLM's Gemma 3 processor looks them up by
    # name when it places image tokens (a byte-level vocabulary has no "\n": KeyError).
    tokenizer.add_tokens([AddedToken("\n" * n, normalized=False) for n in (4, 3, 2, 1)])
    return tokenizer


def build_gemma3(out_dir: str | Path, corpus: Iterable[str] = FAMILY_CORPUS, seed: int = 0,
                 text: dict | None = None) -> Path:
    """A random Gemma 3 folder (MedGemma's layout): 32 px SigLIP input pooled to 4 image tokens. `text` overrides
    the language model's TINY_TEXT settings."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    tokenizer = _gemma3_tokenizer(corpus)
    image_size, patch, image_tokens = 32, 8, 4
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer, chat_template=GEMMA3_TEMPLATE, image_seq_length=image_tokens,
    )
    ids = tokenizer.convert_tokens_to_ids
    text = {**TINY_TEXT, **(text or {})}
    config = Gemma3Config(
        text_config=dict(text, head_dim=text["hidden_size"] // text["num_attention_heads"], vocab_size=len(tokenizer),
                         max_position_embeddings=4096,
                         sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                         bos_token_id=ids("<bos>"), eos_token_id=ids("<eos>"), pad_token_id=ids("<pad>")),
        vision_config={"image_size": image_size, "patch_size": patch, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        mm_tokens_per_image=image_tokens,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    return _save(out_dir, Gemma3ForConditionalGeneration, config, processor,
                 [ids("<eos>"), ids("<end_of_turn>")], ids("<pad>"), seed)


# --- Qwen3-VL: Qwen2.5-VL's tokens, 16 px patches merged 2x2, deepstack vision features -------------------------

# Qwen3-VL-Instruct's template is Qwen2.5-VL's without the default system message; the assistant's turn sits in
# {% generation %} markers (as above).
QWEN3_VL_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}", "").replace(
    "<|im_start|>{{ message['role'] }}\n",
    "<|im_start|>{{ message['role'] }}\n{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{{ content['text'] }}{% endfor %}{% endif %}<|im_end|>\n{% endgeneration %}{% else %}").replace(
    "{% endif %}{% endfor %}{% if add_generation_prompt %}",
    "{% endif %}{% endif %}{% endfor %}{% if add_generation_prompt %}")


def build_qwen3_vl(out_dir: str | Path, corpus: Iterable[str] = FAMILY_CORPUS, seed: int = 0,
                   max_pixels: int = 256 * 256, text: dict | None = None) -> Path:
    """A random Qwen3-VL folder: 16 px patches, 2x2 merge, so a 256x256 budget is at most 64 visual tokens. `text`
    overrides the language model's TINY_TEXT settings."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = train_tokenizer(corpus, 1024, SPECIAL_TOKENS, QWEN3_VL_TEMPLATE)
    size = {"shortest_edge": 64 * 64, "longest_edge": max_pixels}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2),
        video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2),
        tokenizer=tokenizer, chat_template=QWEN3_VL_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    text = {**TINY_TEXT, **(text or {})}
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    half = head_dim // 2  # interleaved M-RoPE: (temporal, height, width) sections of each head's rotary half
    config = Qwen3VLConfig(
        text_config=dict(text, head_dim=head_dim, vocab_size=len(tokenizer), max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_interleaved": True,
                                          "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]}),
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
                       "spatial_merge_size": 2, "out_hidden_size": text["hidden_size"],
                       "num_position_embeddings": 256, "deepstack_visual_indexes": [0]},
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    return _save(out_dir, Qwen3VLForConditionalGeneration, config, processor, ids("<|im_end|>"),
                 ids("<|endoftext|>"), seed)



def _save(out_dir, model_class, config, processor, eos_token_id, pad_token_id, seed: int) -> Path:
    import torch
    import transformers
    from transformers import GenerationConfig

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = model_class(config)
    with torch.no_grad():  # Gemma 3 starts its image projection at zero: a random checkpoint would ignore the image
        for name, param in model.named_parameters():
            if name.endswith("mm_input_projection_weight") and not param.any():
                param.normal_(std=0.02)
    eos = eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad_token_id, do_sample=False)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir
