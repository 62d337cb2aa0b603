"""The per-request side of continuous batching: requests, their handles and token sampling.

`FastEngine` (engines/fast.py) owns the model, the KV cache slots and the scheduler thread; this module holds the
pieces that know nothing of the model: what a request asks for and how the next token is picked from logits
(greedy, or temperature / top-k / top-p with a per-request seed). Streamed text is base.TextStream.
"""

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from cxrlm.engines.base import Generation


@dataclass
class Request:
    """One generation: a chat (Hugging Face message format) with its images, and how to decode it."""

    messages: list[dict]
    images: list = field(default_factory=list)
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 is greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 keeps the whole vocabulary
    seed: int | None = None
    on_text: Callable[[str], None] | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("sampling needs temperature >= 0, 0 < top_p <= 1 and top_k >= 0")


@dataclass
class FastGeneration(Generation):
    """A Generation with the serving timings: queueing before the prefill and time to the first token."""

    token_ids: list[int] | None = None  # the new tokens, eos included when the model stopped on it
    queue_s: float = 0.0  # waiting for a free slot, after preprocessing
    first_token_s: float = 0.0  # from submit to the first token, preprocessing included


class Handle(Future):
    """The future of one submitted request; `stop()` ends it at the next token boundary with the text so far."""

    def __init__(self):
        super().__init__()
        self.stop_requested = False

    def stop(self) -> None:
        self.stop_requested = True


def pick_tokens(logits, requests: list[Request], generators: list, seen=None, repetition_penalty: float = 1.0):
    """The next token of each row. `logits` is [rows, vocab]; greedy rows take the argmax (as HF generate does).

    `seen` [rows, vocab] marks tokens already in each sequence, for the checkpoint's repetition penalty (applied
    as in transformers: divide positive logits, multiply negative ones).
    """
    import torch

    logits = logits.float()
    if seen is not None and repetition_penalty != 1.0:
        penalised = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    tokens = logits.argmax(dim=-1)
    for row, request in enumerate(requests):
        if request.temperature > 0:
            tokens[row] = _sample(logits[row], request, generators[row])
    return tokens


def _sample(logits, request: Request, generator):
    import torch

    logits = logits / request.temperature
    if request.top_k:
        kth = torch.topk(logits, min(request.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if request.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
        # Drop a token once the tokens before it already hold top_p of the mass; the first always stays.
        drop = (cumulative - torch.softmax(ordered, dim=-1)) > request.top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[0]


def make_generator(seed: int | None, device: str):
    import torch

    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator

