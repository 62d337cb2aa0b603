"""A scripted engine for tests: stands in for a trained model behind the engine contract (cxrlm.engines.base)."""

from cxrlm.engines.base import EngineCapabilities, Generation


class ScriptedEngine:
    """Answers each call with the next scripted text (the last one again once they run out), `new_tokens` tokens
    each, as if the model saw an input of `input_size` (or, with `cycle`, the first text again); streams each answer
    to `on_text` in two pieces; records every call's messages and its decoder."""

    def __init__(self, *texts: str, input_size: tuple[int, int] | None = None, new_tokens: int = 5,
                 mean_numbers: bool = False, cycle: bool = False):
        self.texts = list(texts)
        self.cycle = cycle
        self.input_size = input_size
        self.new_tokens = new_tokens
        self.capabilities = EngineCapabilities(concurrent=False, mean_numbers=mean_numbers)
        self.calls: list[list[dict]] = []
        self.decoders: list[str] = []  # "greedy" (generate) or "mean" (generate_mean_numbers), per call

    def generate(self, messages, images, max_new_tokens, on_text=None, temperature=0.0) -> Generation:
        return self._answer(messages, "greedy", on_text)

    def generate_mean_numbers(self, messages, images, max_new_tokens, on_text=None) -> Generation:
        if not self.capabilities.mean_numbers:
            raise NotImplementedError("this scripted engine declares mean_numbers=False")
        return self._answer(messages, "mean", on_text)

    def yes_probability(self, conversations, images) -> list[float]:
        raise NotImplementedError("scripted engines answer in text only")

    def saliency(self, messages, images, answer=None, method="gradient"):
        raise NotImplementedError("scripted engines have no gradients")

    def count_tokens(self, texts) -> None:
        return None  # no tokenizer, as with a remote engine

    def close(self) -> None:
        pass

    def _answer(self, messages, decoder: str, on_text) -> Generation:
        self.calls.append(messages)
        self.decoders.append(decoder)
        n = len(self.calls) - 1
        text = self.texts[n % len(self.texts) if self.cycle else min(n, len(self.texts) - 1)]
        if on_text:
            on_text(text[: len(text) // 2])
            on_text(text[len(text) // 2:])
        return Generation(text, self.new_tokens, 0.0, 0.1, input_size=self.input_size)
