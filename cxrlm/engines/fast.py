"""The fast engine: shared-prefix batched prefill, then batched decoding from a preallocated KV cache.

A prompt's prefix (up to its last image token) runs once through the Hugging Face model (vision encoder + prompt,
exactly as `hf` does) and stays in a small LRU for later requests about the same image; its keys and values are
copied into a slot of a static cache ([slots, kv_heads, max_len, head_dim] per layer) for each request, and the
requests' endings are prefilled together into their slots. A scheduler thread alternates such a prefill turn
(bounded by a token budget) with one decode step for every running request: requests join and leave at token
boundaries (continuous batching). The decode step calls the family's own decoder (`language_model`) with a cache
object that writes each row at its own position and a mask that shows each row only its own tokens, so every
supported family (Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, Gemma 3) decodes with its own layers and M-RoPE offsets.
On CUDA the decode step of each (batch bucket, attention span) is captured once as a CUDA graph at start-up; nothing is
compiled on the request path. On CPU the same code runs eagerly, with the language model's fp32 weights repacked
for oneDNN (cxrlm.engines.packed: 2-4x faster Linear layers than PyTorch's default BLAS there).

Not here: paged attention, speculative decoding (each would be the next speed-up), and beam search.
"""

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from cxrlm.engines.base import EngineCapabilities, TextStream, eos_ids, input_size, per_token
from cxrlm.engines.batching import FastGeneration, Handle, Request, make_generator, pick_tokens
from cxrlm.engines.hf import HFEngine, as_attention_mask, output_logits, rope_delta
from cxrlm.errors import CxrlmError

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class SlotCache:
    """Per-layer key/value tensors, one row (slot) per running request; the decoder writes through `update`.

    Duck-types the part of transformers' Cache that attention layers call during a one-token decode step:
    row i's new key goes to position `positions[i]`, and the layer attends over the whole (masked) buffer.
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        import torch

        shape = (slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.rows = torch.arange(slots, device=device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=device)
        self.max_len = max_len
        self.span = max_len  # a step attends over positions [0, span): the longest running sequence, rounded up
        # Prefill of prompt endings: rows first_slot.. write their tokens from position `start` on, all alike.
        # None: a decode step (one token per row, each at its own position).
        self.first_slot = 0
        self.start: int | None = None

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        rows, first = key_states.shape[0], self.first_slot
        keys = self.keys[layer_idx][first:first + rows, :, :self.span]
        values = self.values[layer_idx][first:first + rows, :, :self.span]
        if self.start is None:
            keys[self.rows[:rows], :, self.positions[:rows]] = key_states[:, :, -1]
            values[self.rows[:rows], :, self.positions[:rows]] = value_states[:, :, -1]
        else:
            end = self.start + key_states.shape[-2]
            keys[:, :, self.start:end] = key_states
            values[:, :, self.start:end] = value_states
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.max_len  # decode passes explicit positions and masks; this only sizes fallbacks

    def load(self, slot: int, prefill_cache, length: int) -> None:
        """Copy a batch-1 prefill cache (transformers DynamicCache) into `slot`, right-aligned at `length`.

        A sliding-window layer keeps only its last window-1 tokens; they belong at the end, and the mask hides
        the positions before them.
        """
        for layer, cached in enumerate(prefill_cache.layers):
            n = cached.keys.shape[-2]
            self.keys[layer][slot, :, length - n:length] = cached.keys[0]
            self.values[layer][slot, :, length - n:length] = cached.values[0]

    def move(self, source: int, target: int, length: int) -> None:
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]


@dataclass(eq=False)
class _Waiting:
    """A submitted request, preprocessed, waiting for a slot. Requests with the same `key` share `cut` tokens of
    prompt (everything up to and including the last image) and the images: one prefill of that prefix serves them."""

    request: Request
    handle: Handle
    inputs: dict
    submitted: float
    preprocess_s: float
    cut: int  # prompt tokens in the shared prefix; the rest (the ending) is prefilled per request, in a batch
    key: bytes  # digest of the prefix's tokens and image tensors


@dataclass
class _Prefix:
    """A prefilled prefix (image encoded, its tokens in the cache), kept for the next requests about that image."""

    cache: object  # transformers DynamicCache, batch 1
    rope_delta: int


class _Head:
    """The first `length` positions of one row of a prefill cache, as views (a whole prompt's cache serving as its
    prefix, or one row of a batch)."""

    def __init__(self, cache, length: int, row: int = 0, copy: bool = False):
        def part(tensor):
            return tensor[row:row + 1, :, :length].clone() if copy else tensor[row:row + 1, :, :length]

        self.layers = [_Layer(part(layer.keys), part(layer.values)) for layer in cache.layers]


@dataclass
class _Layer:
    keys: object
    values: object


@dataclass
class _Running:
    """A request in a slot: its stream, sampler state and how many of its tokens the cache holds."""

    request: Request
    handle: Handle
    stream: TextStream
    generator: object
    length: int  # tokens in the cache; the next one is written here
    rope_delta: int  # M-RoPE: the text position of cache index i is i + rope_delta (0 for 1-D RoPE families)
    last_token: int
    submitted: float
    admitted: float
    first_token: float
    preprocess_s: float
    input_size: tuple[int, int] | None


class FastEngine(HFEngine):
    """HFEngine's interface plus `submit(request) -> Handle` for many concurrent requests.

    max_batch: slots in the KV cache (running requests); max_len: positions per slot (prompt + new tokens);
    cuda_graphs: capture the decode step per batch bucket (default: on CUDA only); prefill_tokens: the most prompt
    tokens prefilled between two decode steps (at least one request's), so arrivals slow decoding but never stop it;
    prefixes: prefilled image prefixes kept for later requests about the same image; pack_weights: reorder the
    language model's fp32 Linear weights for oneDNN, in place (default: on a CPU, where it applies).
    """

    def __init__(self, model, processor, device: str, max_batch: int | None = None, max_len: int | None = None,
                 cuda_graphs: bool | None = None, prefill_tokens: int | None = None, prefixes: int = 8,
                 pack_weights: bool | None = None):
        import torch

        from cxrlm.engines import packed

        super().__init__(model, processor, device)
        if pack_weights if pack_weights is not None else packed.can_pack(model, device):
            packed.pack(model)  # in place: this engine's model decodes 2-4x faster on a CPU (cxrlm.engines.packed)
        # generate() from many threads: requests join the running batch.
        # heatmaps=False: a backward pass beside the preallocated KV cache is untested (memory); use the hf engine.
        self.capabilities = EngineCapabilities(concurrent=True, mean_numbers=self.digits is not None, heatmaps=False)
        on_cuda = device.startswith("cuda")
        self.text_config = model.config.get_text_config()
        self.max_batch = max_batch or (64 if on_cuda else 8)
        self.max_len = max_len or min(self.text_config.max_position_embeddings, 4096 if on_cuda else 2048)
        self.prefill_tokens = prefill_tokens or (8192 if on_cuda else 512)
        self.buckets = tuple(b for b in BUCKETS if b < self.max_batch) + (self.max_batch,)
        # Attention reads the cache up to a span, not all of max_len: powers of two from 256, then max_len.
        self.spans = tuple(2**k for k in range(8, 20) if 2**k < self.max_len) + (self.max_len,)
        self.decoder = getattr(model.model, "language_model", None) or model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.eos = eos_ids(model.generation_config)
        self.repetition_penalty = float(getattr(model.generation_config, "repetition_penalty", None) or 1.0)
        self.image_token = _image_token(model.config, processor)
        self.pad_id = processor.tokenizer.pad_token_id or 0
        self.sliding = "sliding_attention" in (getattr(self.text_config, "layer_types", None) or ())  # Gemma 3
        self.cache = SlotCache(self.text_config.num_hidden_layers, self.max_batch, self.text_config.num_key_value_heads,
                               self.max_len, _head_dim(self.text_config), model.dtype, device)
        self.input_ids = torch.zeros(self.max_batch, dtype=torch.long, device=device)
        self.rope_deltas = torch.zeros(self.max_batch, dtype=torch.long, device=device)
        self.seen = (torch.zeros(self.max_batch, self.lm_head.out_features, dtype=torch.bool, device=device)
                     if self.repetition_penalty != 1.0 else None)
        self.graphs = {}
        self.prefixes: OrderedDict[bytes, _Prefix] = OrderedDict()  # least recently used first
        self.max_prefixes = prefixes
        self.lock = threading.Lock()  # one forward at a time: the scheduler's, classify's and ground's
        self.preprocess_lock = threading.Lock()  # HF fast tokenizers raise "Already borrowed" when shared by threads
        self.start_lock = threading.Lock()
        self.pending: queue.Queue = queue.Queue()
        self.waiting: list[_Waiting] = []  # the scheduler's own: taken from `pending`, not yet prefilled
        self.running: list[_Running] = []
        self.thread = None
        self.closed = False
        if cuda_graphs if cuda_graphs is not None else on_cuda:
            self.capture_graphs()

    # --- public API ------------------------------------------------------------------------------------------

    def submit(self, request: Request) -> Handle:
        """Queue a request; it joins the running batch at the next token boundary. Thread-safe.

        The chat template and image processing run here, in the caller's thread, so the scheduler only runs the
        model; a request that cannot fit the cache raises CxrlmError here.
        """
        if self.closed:
            raise RuntimeError("the engine is closed")
        submitted = time.perf_counter()
        with self.preprocess_lock:
            inputs = self._inputs([request.messages], [request.images])
        length = inputs["input_ids"].shape[1]
        if length + request.max_new_tokens > self.max_len:
            raise CxrlmError(f"the prompt ({length} tokens) plus max_new_tokens ({request.max_new_tokens}) does not "
                             f"fit the fast engine's {self.max_len}-token cache: ask for fewer new tokens, or load "
                             "the engine with a larger max_len")
        cut, key = _prefix_key(inputs, self.image_token, request.images)
        handle = Handle()
        self.pending.put(_Waiting(request, handle, inputs, submitted, time.perf_counter() - submitted, cut, key))
        self._start()
        return handle

    def generate(self, messages, images, max_new_tokens, on_text=None, temperature=0.0) -> FastGeneration:
        config = self.model.generation_config
        sampled = {"top_p": config.top_p or 1.0, "top_k": config.top_k or 0} if temperature > 0 else {}
        request = Request(messages, list(images), max_new_tokens, temperature, on_text=on_text, **sampled)
        return self.submit(request).result()

    # classify and ground run HFEngine's code in the caller's thread; they take the tokenizer and the model one
    # step at a time (_preprocessing, _forward), so the scheduler's decode steps go on between their forwards.

    def _preprocessing(self):
        return self.preprocess_lock

    def _forward(self):
        return self.lock

    def close(self) -> None:
        self.closed = True
        self.pending.put(None)
        if self.thread is not None:
            self.thread.join(30)

    # --- the decode step -------------------------------------------------------------------------------------

    def capture_graphs(self) -> None:
        """Record the decode step of every bucket as a CUDA graph (start-up cost, a second or so per bucket)."""
        import torch

        pool = torch.cuda.graph_pool_handle()
        with self.lock, torch.inference_mode():
            for rows, span in sorted(((r, s) for r in self.buckets for s in self.spans), reverse=True):
                try:  # largest first, so the smaller graphs reuse its memory
                    self.graphs[rows, span] = _capture(lambda r=rows, s=span: self._decode(r, s), pool)
                except Exception as err:  # noqa: BLE001 - a family whose decode cannot be captured still works, eagerly
                    log.warning("CUDA graph capture failed for batch %d (%s); decoding eagerly", rows, err)
                    self.graphs.clear()
                    return

    def _decode(self, rows: int, span: int):
        """Logits [rows, vocab] for the tokens in `input_ids[:rows]` at cache positions `cache.positions[:rows]`,
        attending over the first `span` positions of each row."""
        self.cache.span = span
        positions = self.cache.positions[:rows, None]
        hidden = self.decoder(
            input_ids=self.input_ids[:rows, None],
            position_ids=positions + self.rope_deltas[:rows, None],
            attention_mask=self._mask(positions, span),
            past_key_values=self.cache,
            use_cache=True,
        ).last_hidden_state
        return output_logits(self.model, hidden[:, -1])

    def _mask(self, positions, span: int):
        """Query positions [rows, queries] -> each query sees its row's cache up to its own position (and, in
        sliding layers, only the last window)."""
        import torch

        keys = torch.arange(span, device=positions.device)[None, None, :]
        full = keys <= positions[:, :, None]
        masks = {"full_attention": as_attention_mask(full[:, None], self.decoder.config, self.model.dtype)}
        if self.sliding:
            window = full & (keys > positions[:, :, None] - self.text_config.sliding_window)
            masks["sliding_attention"] = as_attention_mask(window[:, None], self.decoder.config, self.model.dtype)
            return masks
        return masks["full_attention"]  # a 4D mask: every family's mask builder returns it as it is

    # --- prefill ---------------------------------------------------------------------------------------------

    def _prefix(self, item: _Waiting) -> _Prefix:
        """The prefilled prefix of `item` (images and prompt up to the last one): from the cache of recent ones,
        or run through the whole model (vision encoder included) once."""
        prefix = self.prefixes.get(item.key)
        if prefix is not None:
            self.prefixes.move_to_end(item.key)
            return prefix
        inputs = {k: v[:, :item.cut] if per_token(k, v, item.inputs["input_ids"]) else v
                  for k, v in item.inputs.items()}
        cache = self.model(**inputs, use_cache=True, logits_to_keep=1).past_key_values
        return self._remember(item.key, _Prefix(cache, rope_delta(self.model)))  # delta: set by this prefill

    def _remember(self, key: bytes, prefix: _Prefix) -> _Prefix:
        self.prefixes[key] = prefix
        while len(self.prefixes) > self.max_prefixes:
            self.prefixes.popitem(last=False)
        return prefix

    def _prefill_whole(self, items: list[_Waiting], first_slot: int):
        """Requests that share their prefix with nobody waiting and whose prefix is not cached: one forward over
        all their whole prompts, right-padded, as hf batches them, into slots first_slot.. Each one's first `cut`
        positions are kept as the prefix for later requests about its image. One forward per request where their
        image tensors do not stack, or where a sliding-window layer would drop a short row's last tokens.
        Returns (prefixes, logits [rows, vocab])."""
        import torch

        lengths = [item.inputs["input_ids"].shape[1] for item in items]
        inputs = items[0].inputs if len(items) == 1 else _collate([item.inputs for item in items], self.pad_id)
        if inputs is None or (len(items) > 1 and self.sliding and max(lengths) >= self.text_config.sliding_window):
            parts = [self._prefill_whole([item], first_slot + n) for n, item in enumerate(items)]
            return [p for prefixes, _ in parts for p in prefixes], torch.cat([logits for _, logits in parts])
        last = torch.tensor([n - 1 for n in lengths], device=self.device)
        kept = torch.unique(last)  # the output layer only where some prompt ends
        out = self.model(**inputs, use_cache=True, logits_to_keep=kept)
        cache, width = out.past_key_values, inputs["input_ids"].shape[1]
        deltas = getattr(self.model.model, "rope_deltas", None)  # Qwen-VL M-RoPE: one per row
        whole = all(layer.keys.shape[-2] == width for layer in cache.layers)  # no sliding layer dropped any
        prefixes = []
        for row, item in enumerate(items):
            self.cache.load(first_slot + row, _Head(cache, lengths[row], row), lengths[row])
            kept_prefix = bool(item.cut and whole)  # its own copy: a view would keep the whole batch's cache alive
            prefix = _Prefix(_Head(cache, item.cut, row, kept_prefix),
                             int(deltas[row].flatten()[0]) if deltas is not None else 0)
            if kept_prefix:
                self._remember(item.key, prefix)
            prefixes.append(prefix)
        return prefixes, out.logits[torch.arange(len(items), device=self.device), torch.searchsorted(kept, last)]

    def _prefill_endings(self, first_slot: int, endings: list[list[int]], start: int, rope_delta: int):
        """Logits [rows, vocab] after each ending, prefilled in one batch into slots first_slot.. from position
        `start` on (their prefix is already there). Right-padded: causal attention never shows a real token the
        padding after it, and the padding's keys lie past the row's length, where decoding overwrites them."""
        import torch

        rows, width = len(endings), max(len(e) for e in endings)
        ids = torch.tensor([e + [e[-1]] * (width - len(e)) for e in endings], device=self.device)
        positions = (start + torch.arange(width, device=self.device))[None, :].expand(rows, -1)
        span = next(s for s in self.spans if s >= start + width)
        self.cache.first_slot, self.cache.start, self.cache.span = first_slot, start, span
        try:
            hidden = self.decoder(input_ids=ids, position_ids=positions + rope_delta,
                                  attention_mask=self._mask(positions, span), past_key_values=self.cache,
                                  use_cache=True).last_hidden_state
        finally:
            self.cache.first_slot, self.cache.start = 0, None
        last = torch.tensor([len(e) - 1 for e in endings], device=self.device)
        return output_logits(self.model, hidden[torch.arange(rows, device=self.device), last])

    def _admit(self) -> None:
        """Prefill waiting requests, oldest first, until the turn's budget of prompt tokens or the free slots run
        out (the first always goes in, however long its prompt). Requests about an image nobody else asks about
        are prefilled whole, all in one batch; those that share a prefix, as a group (_admit_group)."""
        budget, alone = self.prefill_tokens, []
        while self.waiting and len(self.running) + len(alone) < self.max_batch:
            head = self.waiting[0]
            unseen = head.key not in self.prefixes
            if unseen and not any(item.key == head.key for item in self.waiting[1:]):
                cost = head.inputs["input_ids"].shape[1]
                if budget < self.prefill_tokens and cost > budget:
                    break
                alone.append(self.waiting.pop(0))
                budget -= cost
                continue
            prefix_cost = head.cut if head.cut and unseen else 0
            if budget < self.prefill_tokens and prefix_cost + _ending(head) > budget:
                break
            self._admit_alone(alone)
            alone = []
            budget -= self._admit_group(head, budget - prefix_cost) + prefix_cost
        self._admit_alone(alone)

    def _admit_alone(self, items: list[_Waiting]) -> None:
        items = [item for item in items if item.handle.set_running_or_notify_cancel()]
        if not items:
            return
        admitted, first_slot = time.perf_counter(), len(self.running)
        try:
            with self.lock:
                prefixes, logits = self._prefill_whole(items, first_slot)
        except Exception as err:  # noqa: BLE001 - the requests' callers get it from their futures
            for item in items:
                item.handle.set_exception(err)
            return
        self._join(items, [p.rope_delta for p in prefixes], logits, first_slot, admitted)

    def _admit_group(self, head: _Waiting, budget: int) -> int:
        """Prefill `head` and the waiting requests that share its prefix (as many as `budget` tokens of endings
        and the free slots allow): the prefix once (or not at all, if recently prefilled), then all their endings
        in one batch. Returns the ending tokens prefilled."""
        free, group = self.max_batch - len(self.running), []
        for item in self.waiting:
            if item.key == head.key and (not group or _ending(item) <= budget):
                group.append(item)
                budget -= _ending(item)
                if len(group) == free:
                    break
        taken = {id(item) for item in group}
        self.waiting = [item for item in self.waiting if id(item) not in taken]
        group = [item for item in group if item.handle.set_running_or_notify_cancel()]
        if not group:
            return 0
        admitted, first_slot = time.perf_counter(), len(self.running)
        endings = [item.inputs["input_ids"][0, item.cut:].tolist() for item in group]
        try:
            with self.lock:
                prefix = self._prefix(head) if head.cut else _Prefix(None, 0)
                for slot in range(first_slot, first_slot + len(group)):
                    if prefix.cache is not None:
                        self.cache.load(slot, prefix.cache, head.cut)
                logits = self._prefill_endings(first_slot, endings, head.cut, prefix.rope_delta)
        except Exception as err:  # noqa: BLE001 - the requests' callers get it from their futures
            for item in group:
                item.handle.set_exception(err)
            return sum(map(len, endings))
        self._join(group, [prefix.rope_delta] * len(group), logits, first_slot, admitted)
        return sum(map(len, endings))

    def _join(self, items: list[_Waiting], rope_deltas: list[int], logits, first_slot: int, admitted: float):
        """Prefilled requests, now in slots first_slot..: they join the running batch with their first token."""
        runs = []
        for slot, item, delta in zip(range(first_slot, first_slot + len(items)), items, rope_deltas, strict=True):
            prompt = item.inputs["input_ids"][0]
            if self.seen is not None:
                self.seen[slot] = False
                self.seen[slot, prompt] = True
            stream = TextStream(self.processor.tokenizer, item.request.on_text)
            runs.append(_Running(item.request, item.handle, stream, make_generator(item.request.seed, self.device),
                                 prompt.numel(), delta, -1, item.submitted, admitted, 0.0, item.preprocess_s,
                                 input_size(item.inputs, self.processor)))
        self.running += runs
        self._advance(runs, logits, list(range(first_slot, first_slot + len(items))))

    # --- the scheduler ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="cxrlm-fast-engine", daemon=True)
                self.thread.start()

    def _loop(self) -> None:
        """One prefill (a budget of prompt tokens) and one decode step per turn: arrivals never stop decoding,
        and a step's cost does not grow with the number of requests waiting."""
        import torch

        with torch.inference_mode():
            while not self.closed:
                self._take(block=not self.running and not self.waiting)
                if self.waiting and len(self.running) < self.max_batch:
                    self._admit()
                if self.running:
                    self._step()
        for run in self.running:
            run.handle.set_exception(RuntimeError("the engine was closed"))
        for item in self.waiting:
            item.handle.set_exception(RuntimeError("the engine was closed"))

    def _take(self, block: bool) -> None:
        """Move submitted requests to the scheduler's waiting list (waiting for one when there is nothing to do)."""
        while True:
            try:
                item = self.pending.get(timeout=0.5) if block else self.pending.get_nowait()
            except queue.Empty:
                return
            if item is None:
                return
            self.waiting.append(item)
            block = False

    def _step(self) -> None:
        count = len(self.running)
        rows = next(b for b in self.buckets if b >= count)
        span = next(s for s in self.spans if s > max(r.length for r in self.running))
        self.input_ids[:rows] = 0
        self.cache.positions[:rows] = 0  # padding rows write into their own free slot, at position 0
        self.input_ids[:count] = _tensor([r.last_token for r in self.running], self.input_ids)
        self.cache.positions[:count] = _tensor([r.length for r in self.running], self.input_ids)
        self.rope_deltas[:count] = _tensor([r.rope_delta for r in self.running], self.input_ids)
        try:
            with self.lock:
                graph = self.graphs.get((rows, span))
                logits = graph() if graph else self._decode(rows, span)
            for run in self.running:
                run.length += 1
            self._advance(list(self.running), logits[:count], list(range(count)))
        except Exception as err:
            log.exception("decode step failed; failing the %d running requests", count)
            for run in self.running:
                run.handle.set_exception(err)
            self.running.clear()

    def _advance(self, runs: list[_Running], logits, slots: list[int]) -> None:
        """Pick each run's next token, stream it, and retire the runs that are done (highest slot first)."""
        seen = self.seen[slots] if self.seen is not None else None
        tokens = pick_tokens(logits, [r.request for r in runs], [r.generator for r in runs], seen,
                             self.repetition_penalty).tolist()
        now = time.perf_counter()
        done = []
        for run, slot, token in zip(runs, slots, tokens, strict=True):
            run.last_token = token
            run.first_token = run.first_token or now
            if self.seen is not None:
                self.seen[slot, token] = True
            try:
                run.stream.push(token)
            except Exception as err:  # noqa: BLE001 - a failing on_text callback ends its own request only
                run.handle.set_exception(err)
                done.append(slot)
                continue
            finished = (token in self.eos or len(run.stream.tokens) >= run.request.max_new_tokens
                        or run.handle.stop_requested)
            if finished:
                done.append(slot)
        for slot in sorted(done, reverse=True):
            self._retire(slot)

    def _retire(self, slot: int) -> None:
        run = self.running[slot]
        last = len(self.running) - 1
        if slot != last:  # keep running requests in slots 0..n-1, so a bucket is a prefix of the cache
            moved = self.running[last]
            self.cache.move(last, slot, moved.length)
            if self.seen is not None:
                self.seen[slot] = self.seen[last]
            self.running[slot] = moved
        self.running.pop()
        if run.handle.done():
            return
        now = time.perf_counter()
        run.handle.set_result(FastGeneration(
            text=run.stream.finish(), new_tokens=len(run.stream.tokens), preprocess_s=run.preprocess_s,
            generate_s=now - run.admitted, input_size=run.input_size, token_ids=run.stream.tokens,
            queue_s=run.admitted - run.submitted - run.preprocess_s, first_token_s=run.first_token - run.submitted,
        ))


def _capture(step, pool):
    """Warm a step up on a side stream, record it as a CUDA graph, return a replay function giving its output."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        output = step()

    def replay():
        graph.replay()
        return output

    return replay


def _tensor(values: list[int], like):
    import torch

    return torch.tensor(values, dtype=like.dtype).to(like.device, non_blocking=True)


def _head_dim(text_config) -> int:
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


def _collate(inputs: list[dict], pad_id: int):
    """One right-padded batch of several single-prompt processor outputs: per-token fields padded (the mask with
    zeros), image tensors stacked along their first axis. None where they do not stack (LLaVA-OneVision crops of
    different counts) or carry anything but tensors."""
    import torch

    width = max(x["input_ids"].shape[1] for x in inputs)
    batch = {}
    for key, first in inputs[0].items():
        values = [x.get(key) for x in inputs]
        if not all(torch.is_tensor(v) for v in values):
            return None
        if per_token(key, first, inputs[0]["input_ids"]):
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.cat([torch.nn.functional.pad(v, (0, width - v.shape[1]), value=fill) for v in values])
        elif any(v.shape[1:] != first.shape[1:] for v in values):
            return None
        else:
            batch[key] = torch.cat(values)
    return batch


def _ending(item: _Waiting) -> int:
    """Prompt tokens after the shared prefix: what a request costs to prefill when its prefix is ready."""
    return item.inputs["input_ids"].shape[1] - item.cut


def _image_token(config, processor) -> int | None:
    """The placeholder id the processor expands into an image's tokens (Qwen: image_token_id; LLaVA, Gemma 3:
    image_token_index)."""
    for owner, name in ((config, "image_token_id"), (config, "image_token_index"), (processor, "image_token_id")):
        if isinstance(getattr(owner, name, None), int):
            return getattr(owner, name)
    return None


def _prefix_key(inputs, image_token: int | None, images: list) -> tuple[int, bytes]:
    """(cut, key): the prompt up to and including its last image token is a prefix that requests about the same
    image share (system prompt, image); the key digests its tokens and the images' pixels (what the processor
    made its tensors from; a sixth of their bytes), so two uploads of one picture share it too. Without images the
    cut is 0: nothing to share."""
    ids = inputs["input_ids"][0]
    where = (ids == image_token).nonzero() if image_token is not None else ids[:0]
    cut = min(int(where[-1]) + 1, ids.numel() - 1) if where.numel() else 0
    digest = hashlib.blake2b(ids[:cut].cpu().numpy().tobytes(), digest_size=16)
    for image in images if cut else ():
        digest.update(f"{getattr(image, 'mode', '')} {getattr(image, 'size', '')} {getattr(image, 'shape', '')}".encode())
        digest.update(image.tobytes())
    return cut, digest.digest()
