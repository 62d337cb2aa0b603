"""llama.cpp's column of benchmarks/generation.py: a Qwen2.5-VL's language model, exported to GGUF, decoded at batch 1.

llama.cpp comes from PyPI's `llama-cpp-py-sync` (a prebuilt CPU libllama with CFFI bindings; `llama-cpp-python`
has no prebuilt CPU wheel on PyPI, only a source build), GGUF files are written with `gguf` (llama.cpp's own
writer). The export takes the language model's weights as they are (llama.cpp's `qwen2` architecture: with text
only, Qwen2.5-VL's multimodal rotary positions are plain rotary positions), with a placeholder vocabulary of the
same size (tokens are fed as ids; nothing is tokenized). q8_0 is llama.cpp's own quantization of that file.
"""

import statistics
import sys
import time
from pathlib import Path

LLAMA_FTYPE_MOSTLY_Q8_0 = 7  # llama.h's llama_ftype
GGML_LOG_LEVEL_ERROR = 4  # ggml.h's ggml_log_level
QUIET = []


def write_gguf(model, path: Path) -> None:
    """The language model of a transformers Qwen2.5-VL as an f32 GGUF file of llama.cpp's `qwen2` architecture."""
    import gguf

    text = model.config.text_config
    decoder = model.get_decoder()
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(text.max_position_embeddings)
    writer.add_embedding_length(text.hidden_size)
    writer.add_block_count(text.num_hidden_layers)
    writer.add_feed_forward_length(text.intermediate_size)
    writer.add_head_count(text.num_attention_heads)
    writer.add_head_count_kv(text.num_key_value_heads)
    writer.add_layer_norm_rms_eps(text.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(text))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = model.get_output_embeddings().weight.shape[0]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list([f"<t{i}>" for i in range(vocab)])
    writer.add_token_types([gguf.TokenType.NORMAL] * vocab)
    writer.add_token_merges(["<t0> <t1>"])  # llama.cpp's BPE vocabulary wants at least one merge
    writer.add_eos_token_id(vocab - 1)
    tensors = {"token_embd.weight": model.get_input_embeddings().weight, "output_norm.weight": decoder.norm.weight,
               "output.weight": model.get_output_embeddings().weight}
    names = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for index, layer in enumerate(decoder.layers):
        for name, param in layer.named_parameters():
            stem, _, kind = name.rpartition(".")
            target = names.get(name) or f"{names[stem]}.{kind}"
            tensors[f"blk.{index}.{target}"] = param
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor.detach().float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quiet() -> None:
    """llama.cpp logs every tensor it loads to stderr: keep its errors only."""
    from llama_cpp_py_sync._cffi_bindings import get_ffi, get_lib

    @get_ffi().callback("void(enum ggml_log_level, const char *, void *)")
    def log(level, text, data):
        if level >= GGML_LOG_LEVEL_ERROR:
            sys.stderr.write(get_ffi().string(text).decode(errors="replace"))

    QUIET.append(log)  # the callback must outlive this call
    get_lib().llama_log_set(log, get_ffi().NULL)


def quantize_q8_0(source: Path, target: Path) -> None:
    from llama_cpp_py_sync._cffi_bindings import get_lib

    lib = get_lib()
    params = lib.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_MOSTLY_Q8_0
    if lib.llama_model_quantize(str(source).encode(), str(target).encode(), _ref(params)):
        raise RuntimeError(f"llama.cpp could not quantize {source}")


def measure(path: Path, prompt_tokens: int, new_tokens: int, repeats: int, threads: int) -> dict:
    """tok/s, TTFT and decode rate of one request: `prompt_tokens` ids, then `new_tokens` greedy tokens."""
    from llama_cpp_py_sync._cffi_bindings import get_ffi, get_lib

    ffi, lib = get_ffi(), get_lib()
    lib.llama_backend_init()
    model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
    if model == ffi.NULL:
        raise RuntimeError(f"llama.cpp could not load {path}")
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch = prompt_tokens + new_tokens + 16, max(prompt_tokens, 1)
    params.n_threads = params.n_threads_batch = threads
    context = lib.llama_init_from_model(model, params)
    if context == ffi.NULL:
        raise RuntimeError("llama.cpp could not make a context")
    vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
    try:
        def run(tokens: int) -> tuple[float, float]:
            lib.llama_memory_clear(lib.llama_get_memory(context), True)
            ids = ffi.new("llama_token[]", [(7 * i) % vocab for i in range(prompt_tokens)])
            start = time.perf_counter()
            first = None
            batch = lib.llama_batch_get_one(ids, prompt_tokens)
            for _ in range(tokens):
                if lib.llama_decode(context, batch):
                    raise RuntimeError("llama_decode failed")
                logits = lib.llama_get_logits_ith(context, -1)
                ids = ffi.new("llama_token[]", [_argmax(ffi, logits, vocab)])
                if first is None:
                    first = time.perf_counter() - start
                batch = lib.llama_batch_get_one(ids, 1)
            return time.perf_counter() - start, first

        run(2)  # warm-up
        runs = [run(new_tokens) for _ in range(repeats)]
    finally:
        lib.llama_free(context)
        lib.llama_model_free(model)
    seconds, ttft = statistics.median(s for s, _ in runs), statistics.median(t for _, t in runs)
    return {"tok/s @1": new_tokens / seconds, "TTFT ms @1": 1000 * ttft,
            "decode tok/s @1": (new_tokens - 1) / (seconds - ttft)}


def _argmax(ffi, logits, vocab: int) -> int:
    import numpy as np

    return int(np.frombuffer(ffi.buffer(logits, 4 * vocab), dtype=np.float32).argmax())


def _ref(params):
    from llama_cpp_py_sync._cffi_bindings import get_ffi

    ffi = get_ffi()
    pointer = ffi.new("llama_model_quantize_params *")
    pointer[0] = params
    return pointer


def _rope_theta(text_config) -> float:
    rope = getattr(text_config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(text_config, "rope_theta", 1e6))
