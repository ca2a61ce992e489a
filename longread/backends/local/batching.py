"""Continuous batching across the calls that reach one model at the same time (issue 14, item 2).

Concurrent chains, the paths of `multipath` (a thread pool) and `longread serve` requests each call
`LocalModel.complete` from their own thread. Decoding them one after the other reads every weight once per
token per call; decoding them together reads it once per token for all of them. So every call on a model's
weights goes to that model's `Batcher`: one driver thread admits waiting calls (prefix lookup and prefill,
eager and chunked, as before), then runs decode steps over every live call. A call that finishes leaves at
once; a waiting one joins at the next step. Each call keeps its own cache, policy, budget, penalty, guard and
stops (generation.Decoding).

Two ways to run a step:
- eager (the CPU default, and the fallback): each call's own dynamic cache. One call alone runs exactly the
  eager loop's forward (same inputs, so the same logits bit for bit). Several run as one forward whose linear
  layers see the whole batch, while attention runs per call over its own cache (`RaggedCache`: no padding,
  no copy of the caches into one tensor), so calls of any policy and length share a step.
- static (chosen on CUDA): one StaticEngine per policy (static_engine.py), a CUDA graph per step, the host
  reading the tokens every `sync_every` steps; calls join and leave at those reads.

Batched rows compute the same function, but a matrix product over several rows may round differently from
the same product over one, so a batch's logits can differ from a lone call's in the last bits (about 1e-7 on
the tests' models); greedy outputs stay the same unless two tokens are within that of each other.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ..kv.base import CacheAttention, layer_kinds
from . import attention
from .generation import Decoding, GenerationResult, decode_step, prefill

log = logging.getLogger(__name__)

MAX_BATCH = 16
_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_BATCHERS: "weakref.WeakKeyDictionary[Any, Batcher]" = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.RLock()  # batcher_for takes it, then model_lock again


def model_lock(model: Any) -> threading.RLock:
    """One lock per loaded model: one forward pass at a time on shared weights, whichever LocalModel calls."""
    with _REGISTRY_LOCK:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def batcher_for(model: Any) -> "Batcher":
    with _REGISTRY_LOCK:
        found = _BATCHERS.get(model)
        if found is None:
            found = _BATCHERS[model] = Batcher(model)
        return found


def stop_all(timeout: float = 30.0) -> None:
    """Stops every batcher's driver thread: the calls it holds fail with KeyboardInterrupt, and the thread ends
    after the forward pass it is in. The command line calls it on Ctrl-C (and atexit does, for other programs):
    a daemon thread still inside torch when the interpreter exits aborts the process ("terminate called without
    an active exception", exit 134) instead of letting it exit 130."""
    with _REGISTRY_LOCK:
        batchers = list(_BATCHERS.values())
        # A stopped batcher takes no new call; the model's next call (a notebook, a test, a console after Ctrl-C)
        # gets a fresh one instead of the KeyboardInterrupt meant for the calls this stop ended.
        _BATCHERS.clear()
    for batcher in batchers:
        batcher.stop(timeout)


atexit.register(stop_all)


def can_batch(model: Any) -> bool:
    """Several calls in one forward need every layer to be full attention (the per-call attention masks
    nothing) and an attention function transformers lets us route (attention.install)."""
    return layer_kinds(model.config) == {"full_attention"} and attention.install(model)


# -- one forward over several calls' caches -----------------------------------------------------------------------
class RaggedKV(CacheAttention):
    """The keys and values each call's own cache returned for one layer; attention per call, outputs stacked."""

    __slots__ = ("pairs", "inner_name")

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], inner_name: str):
        self.pairs, self.inner_name = pairs, inner_name

    def attend(self, module, query, scaling, inner, **kwargs):
        q_len = query.shape[2]
        outs = []
        for i, (keys, values) in enumerate(self.pairs):
            mask = attention.causal_mask(self.inner_name, keys.shape[2] - q_len, q_len, query.dtype, query.device)
            out, _ = inner(module, query[i : i + 1], keys, values, mask, scaling=scaling, dropout=0.0, **kwargs)
            outs.append(out)
        return torch.cat(outs, dim=0)


class RaggedLayer(CacheLayerMixin):
    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, owner: "RaggedCache", index: int):
        super().__init__()
        self.owner, self.index = owner, index
        self.is_initialized = True
        self.window = max((getattr(m.layers[index], "window", 0) for m in owner.members), default=0)

    def lazy_initialization(self, key_states, value_states):
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        pairs = [member.update(key_states[i : i + 1], value_states[i : i + 1], self.index)
                 for i, member in enumerate(self.owner.members)]
        handle = RaggedKV(pairs, self.owner.inner_name)
        return handle, handle

    def get_seq_length(self) -> int:
        return max(m.get_seq_length(self.index) for m in self.owner.members)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        pass


class RaggedCache(Cache):
    """Row i of a batched forward goes through `members[i]` (any cache of ours, any policy, any length)."""

    def __init__(self, members: list[Any], n_layers: int, inner_name: str):
        self.members = members
        self.inner_name = inner_name
        super().__init__(layers=[RaggedLayer(self, i) for i in range(n_layers)])
        self.wants_queries = any(getattr(m, "wants_queries", False) for m in members)

    def observe(self, layer_idx: int, queries: torch.Tensor) -> None:
        for i, member in enumerate(self.members):
            if getattr(member, "wants_queries", False):
                member.observe(layer_idx, queries[i : i + 1])


@torch.inference_mode()
def batched_forward(model: Any, caches: list[Any], tokens: list[list[int]], positions: list[int]) -> torch.Tensor:
    """One forward of len(caches) sequences, each `len(tokens[i])` tokens (all equal) from positions[i];
    the last position's logits (batch, vocab)."""
    device = next(model.parameters()).device
    if len(caches) == 1:
        ids = torch.tensor(tokens, device=device)
        pos = torch.arange(positions[0], positions[0] + ids.shape[1], device=device)[None]
        return model(input_ids=ids, position_ids=pos, past_key_values=caches[0], use_cache=True,
                     logits_to_keep=1).logits[:, -1, :]
    n = len(tokens[0])
    ids = torch.tensor(tokens, device=device)
    pos = torch.tensor(positions, device=device)[:, None] + torch.arange(n, device=device)[None]
    ragged = RaggedCache(caches, model.config.get_text_config().num_hidden_layers,
                         attention.original_implementation(model))
    stub = torch.ones(len(caches), 1, 1, 1, dtype=torch.bool, device=device)  # 4D: the model builds no mask
    out = model(input_ids=ids, position_ids=pos, past_key_values=ragged, attention_mask=stub, use_cache=True,
                logits_to_keep=1)
    return out.logits[:, -1, :]


class PrefillStopped(Exception):
    """A prefill given up between two chunks: the batcher is stopping (Ctrl-C) or its calls were cancelled."""


@torch.inference_mode()
def prefill_together(model: Any, caches: list[Any], prompts: list[list[int]], starts: list[int], chunk: int,
                     batched: bool = True, stop: Callable[[], bool] | None = None
                     ) -> tuple[list[torch.Tensor | None], int]:
    """Prefills several prompts into their own caches, each from its own start position; (the logits (1, vocab) of
    each prompt's last position (None for an empty prompt), the forwards that held several prompts). Chunk k of
    every prompt that still has a whole chunk k runs in one forward; the tails run one prompt at a time. Each prompt
    keeps its own chunk boundaries (those
    `prefill` uses), so each cache ends as its own chunked prefill leaves it (the tests compare the two).
    `stop()`, asked before every forward, gives the prefill up (PrefillStopped): a Ctrl-C or a cancelled call waits
    at most one chunk."""
    if any(getattr(c, "wants_queries", False) for c in caches):
        from ..kv import install_query_hooks

        install_query_hooks(model)
    full = [len(ids) // chunk for ids in prompts]
    logits: list[torch.Tensor | None] = [None] * len(prompts)
    step = 0

    def check() -> None:
        if stop is not None and stop():
            raise PrefillStopped()

    while batched and sum(1 for f in full if f > step) > 1:
        check()
        rows = [i for i, f in enumerate(full) if f > step]
        out = batched_forward(model, [caches[i] for i in rows],
                              [prompts[i][step * chunk : (step + 1) * chunk] for i in rows],
                              [starts[i] + step * chunk for i in rows])
        for j, i in enumerate(rows):
            logits[i] = out[j : j + 1]
        step += 1
    for i, ids in enumerate(prompts):
        for lo in range(min(full[i], step) * chunk, len(ids), chunk):
            check()
            logits[i] = prefill(model, ids[lo : lo + chunk], caches[i], start_position=starts[i] + lo, chunk=chunk)
    return logits, step


def batched_prefill(model: Any, prompts: list[list[int]], caches: list[Any], chunk: int,
                    batched: bool = True) -> list[Any]:
    """Prefills several prompts from position 0 into their own caches (prefill_together); returns the caches."""
    prefill_together(model, caches, prompts, [0] * len(prompts), chunk, batched)
    return caches


# -- the scheduler ------------------------------------------------------------------------------------------------
class Signal(threading.Event):
    """A threading.Event that also calls `callbacks` when set (an asyncio caller wakes its loop from there)."""

    def __init__(self) -> None:
        super().__init__()
        self.callbacks: list[Callable[[], None]] = []

    def set(self) -> None:
        super().set()
        for callback in self.callbacks:
            callback()


@dataclass
class Request:
    """One call: `start()` (run by the driver) returns (cache, prompt ids left to prefill, start position).

    `tokens` (prompt + answer cap) and `window` (the row size of a new static engine for it, >= tokens) size its
    static row; `prefill_bytes` is what its prefill needs on the device beyond the row; `budget` (memory.py) is
    the device's memory budget, None where there is none (the CPU)."""

    start: Callable[[], tuple[Any, list[int], int]]
    decoding: Decoding
    policy: Any
    prefill_chunk: int = 512
    engine: str = "eager"  # "eager" | "static"
    window: int = 0
    tokens: int = 0
    prefill_bytes: int = 0
    budget: Any = None
    done: Signal = field(default_factory=Signal)
    result: GenerationResult | None = None
    error: BaseException | None = None
    cancelled: bool = False
    # filled while it runs
    cache: Any = None
    position: int = 0
    token: int = 0
    prefill_tokens: int = 0
    seconds_prefill: float = 0.0
    started_decode: float = 0.0
    static: Any = None  # the static engine holding (or having claimed) its row
    reused: int = 0  # prompt tokens its start found in the prefix cache


class Batcher:
    """The calls on one model's weights: a driver thread that runs while there is work, then exits.

    Each round, under the model's lock: every waiting call that can start is admitted (a static call first claims
    a row, in an engine of its policy with room, grown, or new, within the memory budget: admission.py), the
    admitted calls are prefilled together (`prefill_together`), then one eager step runs over the eager calls and
    one block over each static engine's rows. Calls submitted while the lock is held (by a step, or by a caller)
    join at the next round, all of them at once. A failure is the failing call's: a prefill that fails is retried
    alone, and what still fails is that call's error; a step that fails fails the calls in that step, and the
    batcher goes on with the others (failures.py)."""

    def __init__(self, model: Any, max_batch: int = MAX_BATCH):
        self.model = model
        self.max_batch = max_batch
        self.lock = model_lock(model)
        self._cv = threading.Condition()
        self._waiting: list[Request] = []
        self._driver: threading.Thread | None = None
        self._static: dict[tuple[str, int], Any] = {}
        self.steps = 0  # decode steps run, each over every call in it (tests and benchmarks read them)
        self.peak_batch = 0
        self._stopping = False
        self.prefill_forwards = 0  # forwards of admission prefills run with several calls in them

    def stop(self, timeout: float = 30.0) -> None:
        """No call runs after this one: waiting and live calls fail with KeyboardInterrupt; joins the driver."""
        with self._cv:
            self._stopping = True
            driver = self._driver
            self._cv.notify_all()
        if driver is not None and driver is not threading.current_thread():
            driver.join(timeout)

    def submit(self, request: Request) -> GenerationResult:
        self.enqueue(request)
        try:
            request.done.wait()
        except BaseException:
            request.cancelled = True  # the driver drops it at the next step
            raise
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def enqueue(self, request: Request) -> None:
        """Queues a call (its `done` event is set when it has a result or an error); KeyboardInterrupt once the
        batcher is stopping."""
        with self._cv:
            if self._stopping:
                raise KeyboardInterrupt()
            self._waiting.append(request)
            if self._driver is None:
                self._driver = threading.Thread(target=self._drive, name="longread-batcher", daemon=True)
                self._driver.start()
            self._cv.notify_all()

    @property
    def waiting(self) -> int:
        """Calls queued and not admitted yet."""
        with self._cv:
            return len(self._waiting)

    @property
    def engines(self) -> list[Any]:
        return list(self._static.values())

    # -- the driver ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _drive(self) -> None:
        from . import admission

        live: list[Request] = []
        try:
            while True:
                with self._cv:
                    if self._stopping:
                        self._abandon(live + self._waiting)
                        self._waiting, self._driver = [], None
                        return
                with self.lock:
                    with self._cv:
                        joining, self._waiting = self._waiting, []
                        if not joining and not live and not any(e.rows for e in self._static.values()):
                            self._driver = None
                            return
                    waiting = admission.admit(self, joining, live)
                    if waiting:
                        with self._cv:
                            self._waiting[:0] = waiting
                    live = [r for r in live if not self._drop_cancelled(r)]
                    if live:
                        live = self._eager_step(live)
                    for key, engine in list(self._static.items()):
                        if engine.rows:
                            self._static_block(key, engine)
                if waiting and not live and not any(e.rows for e in self._static.values()):
                    time.sleep(0.001)  # calls wait for rows that calls of other models hold: yield the lock
        except BaseException as exc:  # noqa: BLE001 - a bug here: every waiting call gets the error, none hangs
            log.exception("the batched engine failed")
            with self._cv:
                pending, self._waiting = self._waiting, []
                self._driver = None
            stuck = live + pending + [r for e in self._static.values() for _, r in e.rows]
            for engine in self._static.values():
                engine.rows.clear()
                engine.claimed = 0
            for request in stuck:
                if not request.done.is_set():
                    request.error = exc
                    request.done.set()

    def _abandon(self, requests: list[Request]) -> None:
        stuck = requests + [r for e in self._static.values() for _, r in e.rows]
        for engine in self._static.values():
            engine.rows.clear()
        for request in stuck:
            if not request.done.is_set():
                request.error = KeyboardInterrupt()
                request.done.set()

    def _drop_cancelled(self, request: Request) -> bool:
        if request.cancelled:
            request.error = KeyboardInterrupt()
            request.done.set()
        return request.cancelled

    def _eager_step(self, live: list[Request]) -> list[Request]:
        from .failures import step_failed

        self.steps += 1
        self.peak_batch = max(self.peak_batch, len(live))
        device = next(self.model.parameters()).device
        try:
            if len(live) == 1:  # exactly the eager loop's forward
                r = live[0]
                logits = decode_step(self.model, r.token, r.position, r.cache, device)
            else:
                logits = batched_forward(self.model, [r.cache for r in live], [[r.token] for r in live],
                                         [r.position for r in live])
        except Exception as exc:  # noqa: BLE001 - these calls' error, not the batcher's
            step_failed(exc, live, "a decode step")
            return []
        still = []
        for i, r in enumerate(live):
            r.position += 1
            token = r.decoding.step(logits[i : i + 1])
            if token is None:
                self._finish(r)
            else:
                r.token = token
                still.append(r)
        return still

    def _static_block(self, key: Any, engine: Any) -> None:
        from .failures import block_failed

        self.peak_batch = max(self.peak_batch, len(engine.rows))
        before = engine.steps_run
        try:
            finished = engine.run_block()
        except Exception as exc:  # noqa: BLE001 - the engine's calls fail; the batcher and other engines go on
            block_failed(exc, engine, [owner for _, owner in engine.fail_rows()])
            if engine.idle:
                engine.release()
                del self._static[key]
            return
        finally:
            self.steps += engine.steps_run - before
        for _, request in finished:
            self._finish(request)

    def _finish(self, request: Request) -> None:
        d = request.decoding
        decode = time.perf_counter() - request.started_decode if request.started_decode else 0.0
        request.result = GenerationResult(d.out, d.finish, request.prefill_tokens, request.seconds_prefill, decode,
                                          decoded_tokens=d.decoded)
        request.done.set()
