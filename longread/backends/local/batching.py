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
  no copy of the caches into one tensor: ragged.py), so calls of any policy and length share a step.
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

from ..kv.base import layer_kinds
from . import admission, attention
from .generation import Decoding, GenerationResult, decode_step
from .ragged import batched_forward

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
