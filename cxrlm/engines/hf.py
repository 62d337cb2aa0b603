"""The reference engine: plain transformers `generate`, streamed token by token.

It knows nothing of CXR: it takes chat messages (Hugging Face format, image entries in the first user turn)
and PIL images, and returns text. It implements cxrlm.engines.base.Engine; so do the faster ones.
"""

import threading
import time
from collections.abc import Callable
from contextlib import nullcontext

from cxrlm.engines import numbers
from cxrlm.engines.base import EngineCapabilities, Generation, TextStream, eos_ids, input_size, per_token


class HFEngine:
    # A model of transformers' own: its forward takes `logits_to_keep` and continues a Cache, which classify's
    # shared prefix needs; remote-code models (cxrlm.models.remote_code) may not, and score whole conversations.
    transformers_family = True

    def __init__(self, model, processor, device: str):
        self.model = model
        self.processor = processor
        self.device = device
        # One request at a time; expected-value numbers need a tokenizer that writes one digit per token.
        self.digits = numbers.digit_tokens(processor.tokenizer)
        self.capabilities = EngineCapabilities(concurrent=False, mean_numbers=self.digits is not None, heatmaps=True)
        self.counter = None  # count_tokens' own copy of the tokenizer, made on first use
        self.count_lock = threading.Lock()

    # Where the tokenizer and the model are used: nothing to guard here (one caller at a time); the fast engine
    # takes its locks for each use, so its scheduler runs between the forwards of a classify or ground call.
    def _preprocessing(self):
        return nullcontext()

    def _forward(self):
        return nullcontext()

    def _inputs(self, conversations: list[list[dict]], images: list[list]):
        texts = [
            self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations
        ]
        # One list of images per conversation: every processor accepts it, and Gemma 3's needs it for batches.
        nested = [list(imgs) for imgs in images] if any(images) else None
        inputs = self.processor(text=texts, images=nested, return_tensors="pt", padding=True)
        return inputs.to(self.device)

    def generate(
        self,
        messages: list[dict],
        images: list,
        max_new_tokens: int,
        on_text: Callable[[str], None] | None = None,
        temperature: float = 0.0,
    ) -> Generation:
        import torch

        start = time.perf_counter()
        inputs = self._inputs([messages], [images])
        prepared = time.perf_counter()
        streamer = _CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, streamer=streamer, **sampling,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        new = output[0, inputs["input_ids"].shape[1]:]
        text = self.processor.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(
            text=text,
            new_tokens=int(new.numel()),
            preprocess_s=prepared - start,
            generate_s=time.perf_counter() - prepared,
            input_size=input_size(inputs, self.processor),
        )

    def generate_mean_numbers(self, messages: list[dict], images: list, max_new_tokens: int,
                              on_text: Callable[[str], None] | None = None) -> Generation:
        """Greedy decoding, except that every number is the expected value of the model's belief over whole
        numbers (cxrlm.engines.numbers): for box coordinates."""
        import torch

        digits = self.digits
        if digits is None:
            raise NotImplementedError("this tokenizer writes several digits per token: check "
                                      "engine.capabilities.mean_numbers before calling generate_mean_numbers")
        tokenizer = self.processor.tokenizer
        start = time.perf_counter()
        with self._preprocessing():
            inputs = self._inputs([messages], [images])
        prepared = time.perf_counter()
        stop = eos_ids(self.model.generation_config)
        stream = TextStream(tokenizer, on_text)
        new: list[int] = []
        beliefs: list[numbers.NumberBelief] = []
        length = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            with self._forward():
                out = self.model(**inputs, use_cache=True, logits_to_keep=1)
                delta = rope_delta(self.model)  # read now: another caller's prefill may overwrite the model's
            cache, logprobs = out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), -1)

            def branch(prefixes):
                with self._forward():
                    return _branch_logprobs(self.model, cache, prefixes, self.device, delta)

            while len(new) < max_new_tokens:
                token = int(logprobs.argmax())
                if token in stop:
                    break
                chosen, belief = numbers.mean_number(branch, logprobs, digits) if token in digits else ([token], None)
                chosen = chosen[: max_new_tokens - len(new)]
                if belief is not None:  # where the number sits in the text, for the box it belongs to
                    start_at = len(tokenizer.decode(new, skip_special_tokens=True))
                    end_at = len(tokenizer.decode(new + chosen, skip_special_tokens=True))
                    beliefs.append(numbers.NumberBelief(start_at, end_at, belief))
                positions = torch.arange(length, length + len(chosen), device=self.device)[None] + delta
                with self._forward():
                    out = self.model(input_ids=torch.tensor([chosen], device=self.device), past_key_values=cache,
                                     position_ids=positions, use_cache=True, logits_to_keep=1)
                cache, logprobs = out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), -1)
                length += len(chosen)
                new += chosen
                for t in chosen:
                    stream.push(t)
        stream.finish()
        return Generation(
            text=tokenizer.decode(new, skip_special_tokens=True),
            new_tokens=len(new),
            preprocess_s=prepared - start,
            generate_s=time.perf_counter() - prepared,
            input_size=input_size(inputs, self.processor),
            numbers=beliefs,
        )

    def yes_probability(self, conversations: list[list[dict]], images: list[list]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for the first answer token of each conversation, in one batch. Conversations
        around the same images (classify's questions) share the image once: see _shared_prefix_logits."""
        import torch

        tokenizer = self.processor.tokenizer
        yes = _first_token_ids(tokenizer, ("yes", "Yes"))
        no = _first_token_ids(tokenizer, ("no", "No"))
        with torch.inference_mode():
            logits = self._shared_prefix_logits(conversations, images) if self.transformers_family else None
            if logits is None:
                with self._preprocessing():
                    tokenizer.padding_side = "left"  # so the last position is every row's next token
                    inputs = self._inputs(conversations, images)
                last_only = {"logits_to_keep": 1} if self.transformers_family else {}
                with self._forward():
                    logits = self.model(**inputs, **last_only).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)
        p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
        return (p_yes / (p_yes + p_no).clamp_min(1e-12)).tolist()

    def _shared_prefix_logits(self, conversations: list[list[dict]], images: list[list]):
        """Next-token logits [conversations, vocab] after each conversation, with the images processed, encoded
        and prefilled once: the longest common token prefix (system prompt, images, the question's start) runs
        once, then every ending runs in one batch over that cache (expanded, not copied). None where there is no
        such prefix: one conversation, different images, or an image after the point where they differ."""

        first = images[0] if images else []
        if len(conversations) < 2 or any(len(i) != len(first) or any(a is not b for a, b in zip(i, first))
                                         for i in images[1:]):
            return None
        tokenizer = self.processor.tokenizer
        with self._preprocessing():
            texts = [self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                     for c in conversations]
            ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]  # image placeholders not expanded
        shared = min(min(len(i) for i in ids) - 1, _common_prefix(ids))
        endings = [i[shared:] for i in ids]
        placeholder = getattr(self.processor, "image_token_id", None)
        if any(placeholder in e for e in endings):  # MedGemma asks before the image: its tokens see the question
            return None
        with self._preprocessing():
            inputs = self._inputs([conversations[0]], [first])
        full = inputs["input_ids"]
        cut = full.shape[1] - len(endings[0])
        # The processor expands image placeholders into many tokens: an image inside the endings would also change
        # the first conversation's tail, so this check holds for processors that name no placeholder id too.
        if cut <= 0 or full[0, cut:].tolist() != endings[0]:
            return None
        prefix = {key: value[:, :cut] if per_token(key, value, full) else value for key, value in inputs.items()}
        with self._forward():  # both forwards at once: the endings continue the prefix's M-RoPE rope_deltas
            return self._score_endings(prefix, endings, full.device)

    def _score_endings(self, prefix: dict, endings: list[list[int]], device):
        import torch

        cache = self.model(**prefix, use_cache=True, logits_to_keep=1).past_key_values
        for layer in cache.layers:  # each layer concatenates new keys onto these views: no per-ending copy here
            layer.keys = layer.keys.expand(len(endings), -1, -1, -1)
            layer.values = layer.values.expand(len(endings), -1, -1, -1)
        width = max(len(e) for e in endings)
        # Right-padded: causal attention never shows a real token the padding after it, and positions stay
        # contiguous from the prefix (M-RoPE families add the prefix's rope_deltas themselves).
        batch = torch.tensor([e + [e[-1]] * (width - len(e)) for e in endings], device=device)
        last = torch.tensor([len(e) - 1 for e in endings], device=device)
        kept = torch.unique(last)  # the output layer runs only where some ending ends (a few positions, not all)
        logits = self.model(input_ids=batch, past_key_values=cache, use_cache=True, logits_to_keep=kept).logits
        return logits[torch.arange(len(endings)), torch.searchsorted(kept, last)]

    def saliency(self, messages: list[dict], images: list, answer: str | None = None,
                 method: str = "gradient"):
        """[rows, cols] scores of the first image's vision patches: how strongly each moved the target
        (cxrlm.heatmaps). Target: with no `answer`, the log-odds of "yes" against "no" as the first answer token
        (what classify scores); with an `answer` (a box), the summed log-probability of its number tokens,
        teacher-forced after the prompt (all its tokens if it has no digits)."""
        import torch

        from cxrlm import heatmaps

        tokenizer = self.processor.tokenizer
        inputs = self._inputs([messages], [images])
        answer_ids = tokenizer.encode(answer, add_special_tokens=False) if answer else []
        if answer_ids:
            inputs = _append_tokens(inputs, answer_ids)
        pixels = inputs["pixel_values"].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(**{**inputs, "pixel_values": pixels}).logits[0].float()
            if answer_ids:
                target = _answer_logprob(logits, answer_ids, tokenizer)
            else:
                yes = _first_token_ids(tokenizer, ("yes", "Yes"))
                no = _first_token_ids(tokenizer, ("no", "No"))
                target = torch.logsumexp(logits[-1, yes], 0) - torch.logsumexp(logits[-1, no], 0)
            (grad,) = torch.autograd.grad(target, pixels)
        vision = getattr(self.model.config, "vision_config", None)
        return heatmaps.patch_scores(
            grad.float().cpu().numpy(), pixels.detach().float().cpu().numpy(), inputs.get("image_grid_thw"),
            merge_size=getattr(self.processor.image_processor, "merge_size", 1),
            patch=getattr(vision, "patch_size", 14), method=method,
        )

    def count_tokens(self, texts: list[str]) -> int:
        """Counted on a copy of the tokenizer, under a lock: request threads count while a generation runs, and a
        fast tokenizer used by two threads at once raises "Already borrowed"."""
        import copy

        with self.count_lock:
            if self.counter is None:
                self.counter = copy.deepcopy(self.processor.tokenizer)
            return sum(len(self.counter.encode(text, add_special_tokens=False)) for text in texts)

    def close(self) -> None:
        """Nothing to release: no threads, and the model is freed with the engine."""


def _branch_logprobs(model, cache, prefixes: list[list[int]], device, delta: int = 0):
    """Next-token log-probabilities after each token list (all of one length), continuing `cache` without changing
    or copying it: every list goes into one batch-1 sequence after the cache, at the positions it would have (plus
    the M-RoPE `delta`, rope_delta), each list's tokens seeing the cache and their own list's earlier tokens only
    (a tree mask, as in speculative decoding). Before, each digit deep-copied the cache and repeated it 16 ways."""
    import torch

    config = model.config.get_text_config()
    count, depth = len(prefixes), len(prefixes[0])
    length = cache.get_seq_length()
    step = torch.arange(depth, device=device).repeat(count)  # each token's place in its list
    string = torch.arange(count, device=device).repeat_interleave(depth)
    own = (string[:, None] == string[None, :]) & (step[None, :] <= step[:, None])  # [tokens, tokens]
    masks = {}
    for kind in set(getattr(config, "layer_types", None) or ["full_attention"]):
        cached = min(length, config.sliding_window - 1) if kind == "sliding_attention" else length
        seen = torch.ones(own.shape[0], cached, dtype=torch.bool, device=device)
        if kind == "sliding_attention":  # cached key j sits at position length - cached + j
            seen = torch.arange(cached, device=device)[None, :] > cached + step[:, None] - config.sliding_window
        masks[kind] = as_attention_mask(torch.cat([seen, own], 1)[None, None], config, model.dtype)
    decoder = getattr(model.model, "language_model", None) or model.get_decoder()
    hidden = decoder(input_ids=torch.tensor(prefixes, device=device).reshape(1, -1),
                     position_ids=(length + step + delta)[None], past_key_values=_ReadOnlyCache(cache),
                     attention_mask=masks if len(masks) > 1 else next(iter(masks.values())),
                     use_cache=True).last_hidden_state
    last = hidden[0, depth - 1::depth]  # each list's last token
    return torch.log_softmax(output_logits(model, last).float(), -1)


class _ReadOnlyCache:
    """What an attention layer calls on a cache, over a transformers DynamicCache that stays as it is: each layer
    attends over its cached keys and values followed by the new ones, which are not kept."""

    def __init__(self, cache):
        self.cache = cache

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        import torch

        layer = self.cache.layers[layer_idx]
        return torch.cat([layer.keys, key_states], -2), torch.cat([layer.values, value_states], -2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.cache.get_seq_length(layer_idx)


def rope_delta(model) -> int:
    """M-RoPE (Qwen-VL): after a prefill, the text position of cache index i is i + this; 0 for 1-D RoPE."""
    deltas = getattr(model.model, "rope_deltas", None)
    return int(deltas.flatten()[0]) if deltas is not None else 0


def output_logits(model, hidden):
    """The output layer over decoder states, with the final soft cap of the families that have one (Gemma 3)."""
    import torch

    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def as_attention_mask(allowed, config, dtype):
    """A boolean [rows, 1, queries, keys] mask as the attention implementation takes it: as it is for SDPA, as
    additive scores for eager attention."""
    import torch

    if config._attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _append_tokens(inputs, token_ids: list[int]):
    """The processor's inputs for one conversation with `token_ids` appended to the text: the mask extended with
    ones, any other per-token field (Gemma 3's token_type_ids) with zeros (text)."""
    import torch

    ids = inputs["input_ids"]
    length = ids.shape[1]
    extra = torch.tensor([token_ids], dtype=ids.dtype, device=ids.device)
    for key, value in list(inputs.items()):
        if key == "pixel_values" or not torch.is_tensor(value) or value.dim() != 2 or value.shape != (1, length):
            continue
        fill = extra if key == "input_ids" else (torch.ones_like(extra) if key == "attention_mask"
                                                 else torch.zeros_like(extra))
        inputs[key] = torch.cat([value, fill.to(value.dtype)], 1)
    return inputs


def _answer_logprob(logits, answer_ids: list[int], tokenizer):
    """The summed log-probability of the answer's digit-bearing tokens (of all its tokens if none has a digit);
    `logits` are the whole sequence's, the answer at its end."""
    import torch

    n = len(answer_ids)
    logprobs = torch.log_softmax(logits[-n - 1:-1], -1)
    picked = logprobs[torch.arange(n), torch.tensor(answer_ids)]
    numeric = [i for i, t in enumerate(answer_ids) if any(c.isdigit() for c in tokenizer.decode([t]))]
    return picked[numeric].sum() if numeric else picked.sum()


def _common_prefix(sequences: list[list[int]]) -> int:
    """How many leading tokens all sequences share."""
    shortest = min(sequences, key=len)
    for n, token in enumerate(shortest):
        if any(s[n] != token for s in sequences):
            return n
    return len(shortest)


def _first_token_ids(tokenizer, words) -> list[int]:
    return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})


class _CallbackStreamer:
    """transformers' streamer protocol (put/end) over TextStream; the first put is the prompt."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self._stream = TextStream(tokenizer, on_text)
        self._prompt_done = False

    def put(self, value):
        if not self._prompt_done:
            self._prompt_done = True
            return
        for token in value.reshape(-1).tolist():
            self._stream.push(token)

    def end(self):
        self._stream.finish()
