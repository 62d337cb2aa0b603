"""The engine contract: what every engine (hf, fast, remote, ...) implements and declares, and what they share.

An engine knows nothing of CXR. It takes chat messages (Hugging Face format: `{"type": "image"}` placeholders in
the first user turn) with PIL images and returns text (`Generation`), or the probability of "yes" as the answer.
`CxrModel`, the CLI, `cxrlm serve` and eval call only what `Engine` declares, and read `engine.capabilities`
instead of probing for attributes. docs/ENGINES.md says how to add one.

No heavy imports here: this module is imported by everything that names the contract.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Generation:
    text: str
    new_tokens: int
    preprocess_s: float
    generate_s: float
    input_size: tuple[int, int] | None  # (width, height) of the first image as the model saw it
    # Numbers written by expected value (generate_mean_numbers): their place in `text` and the belief behind them.
    numbers: list = field(default_factory=list)  # of cxrlm.engines.numbers.NumberBelief


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do beyond `generate` and `yes_probability`, declared once, read by callers."""

    concurrent: bool = False  # generate() may be called from many threads at once (the engine batches them)
    mean_numbers: bool = False  # generate_mean_numbers() works: next-token distributions at every digit
    heatmaps: bool = False  # saliency() works: gradients of an answer with respect to the image's pixels


@runtime_checkable
class Engine(Protocol):
    capabilities: EngineCapabilities

    def generate(self, messages: list[dict], images: list, max_new_tokens: int,
                 on_text: Callable[[str], None] | None = None, temperature: float = 0.0) -> Generation:
        """The answer to the last user turn: greedy at temperature 0, else sampled."""
        ...

    def generate_mean_numbers(self, messages: list[dict], images: list, max_new_tokens: int,
                              on_text: Callable[[str], None] | None = None) -> Generation:
        """Greedy, except that each whole number written is the expected value of the model's belief
        (cxrlm.engines.numbers). Call it only when `capabilities.mean_numbers`; otherwise it raises
        NotImplementedError (a caller's bug, not a user's)."""
        ...

    def yes_probability(self, conversations: list[list[dict]], images: list[list]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for the first answer token of each conversation."""
        ...

    def saliency(self, messages: list[dict], images: list, answer: str | None = None, method: str = "gradient"):
        """[rows, cols] scores of the first image's vision patches for the yes log-odds (no `answer`) or the
        log-probability of `answer`'s numbers (cxrlm.heatmaps). Call it only when `capabilities.heatmaps`."""
        ...

    def count_tokens(self, texts: list[str]) -> int | None:
        """Tokens of these texts together, by the model's own tokenizer (no special tokens), for limits checked
        before any model work; None where the engine has no tokenizer at hand (remote)."""
        ...

    def close(self) -> None:
        """Release threads, connections or devices; the engine takes no requests afterwards."""
        ...


class TextStream:
    """Token ids in, finished text pieces out, decoding only the last few tokens per step (vLLM's offsets).

    Decoding a short window that starts a few tokens back keeps word-initial spaces right for tokenizers that
    mark them on the token; a piece is held back while it ends inside a multi-byte character.
    """

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.tokens: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.sent = ""

    def push(self, token: int) -> None:
        self.tokens.append(token)
        if self.on_text is None:
            return
        prefix = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        window = self._decode(self.tokens[self.prefix_offset:])
        if len(window) > len(prefix) and not window.endswith("\ufffd"):
            self._send(window[len(prefix):])
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)

    def finish(self) -> str:
        """The whole text, decoded once; sends whatever the stream still held back."""
        text = self._decode(self.tokens)
        if self.on_text is not None and text.startswith(self.sent) and len(text) > len(self.sent):
            self._send(text[len(self.sent):])
        return text

    def _send(self, piece: str) -> None:
        self.sent += piece
        self.on_text(piece)

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def eos_ids(generation_config) -> set[int]:
    """The tokens `generate` stops on: the checkpoint's generation_config.eos_token_id (one id or a list)."""
    eos = generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def input_size(inputs, processor) -> tuple[int, int] | None:
    """(width, height) of the first image as a Qwen-VL processor resized it (its patch grid); None for families
    whose processor reports no grid (their boxes are fractions of the image, not pixels of the input)."""
    grid = inputs.get("image_grid_thw")
    if grid is None:
        return None
    patch = processor.image_processor.patch_size
    _, rows, cols = (int(v) for v in grid[0])
    return cols * patch, rows * patch


def per_token(key: str, value, input_ids) -> bool:
    """A processor field with one entry per prompt token (mask, token types), not pixels or grids."""
    import torch

    return key != "pixel_values" and torch.is_tensor(value) and value.shape == input_ids.shape
