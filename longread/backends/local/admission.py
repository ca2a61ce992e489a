"""Which waiting calls start in a round of the batcher, where their rows go, and their prefill (issue 21).

A static call needs a row in a static engine of its policy whose rows hold its tokens (prompt + answer cap); the
calls of a round are placed largest first. In order: a free row of such an engine (the smallest window first, so
calls of several windows share one engine); an
engine grown by rows (to the next power of two, or by one) if the budget holds the new rows and the call's
prefill; a new engine of the call's window. When the budget is short, idle engines are freed first. A call that
fits nowhere now waits for rows to free; a call that cannot fit even with every engine of its model idle is
refused (GPUMemoryExceeded, naming the sizes). An eager call needs a place in the batch (`max_batch`).

The admitted calls are then prefilled together (ragged.prefill_together); if that fails, each is retried alone
from its start, so one call's failure (a prompt too long for the memory left, say) is that call's error only.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import torch

from ...errors import GPUMemoryExceeded
from .failures import call_error, fail, give_memory_back
from .memory import gb, static_row_bytes
from .ragged import PrefillStopped, prefill_together

if TYPE_CHECKING:  # the batcher drives admission: it hands itself and its requests in
    from .batching import Batcher, Request


def admit(batcher: Batcher, joining: list[Request], live: list[Request]) -> list[Request]:
    """Admits and prefills what can start now; returns the calls that must wait (in their order)."""
    waiting: list[Request] = []
    admitted: list[Request] = []
    room = batcher.max_batch - len(live)
    # The largest calls are placed first, so that smaller ones of the same round can share their engines' rows.
    ordered = sorted(joining, key=lambda r: -(r.tokens or r.window) if r.engine == "static" else 0)
    # Rows the round asks of each engine size: a new or grown engine gets them at once (one allocation, no copies).
    demand = Counter((r.policy.name, r.window) for r in ordered if r.engine == "static")
    for request in ordered:
        if batcher._drop_cancelled(request):
            continue
        if request.engine == "static":
            key = (request.policy.name, request.window)
            try:
                # The calls admitted before it in this round are prefilled with it: their transients add up.
                engine = place(batcher, request, busy=bool(live or admitted), rows=demand[key],
                               pending=sum(r.prefill_bytes for r in admitted))
                demand[key] -= 1
            except Exception as exc:  # noqa: BLE001 - this call cannot run: its error
                fail(request, call_error(exc, f"making room for a call of {request.tokens} tokens"))
                continue
            if engine is None:
                waiting.append(request)
                continue
            request.static = engine
        else:
            if room < 1:
                waiting.append(request)
                continue
            room -= 1
        admitted.append(request)
    if admitted:
        prefill_admitted(batcher, admitted, live)
    order = {id(r): i for i, r in enumerate(joining)}
    return sorted(waiting, key=lambda r: order[id(r)])


# -- rows -----------------------------------------------------------------------------------------------------------
def _fits(request: Request, nbytes: int) -> bool:
    return request.budget is None or request.budget.fits(nbytes)


def place(batcher: Batcher, request: Request, busy: bool = False, rows: int = 1, pending: int = 0) -> Any:
    """A static engine with a row claimed for `request`, or None (wait); GPUMemoryExceeded if it can never fit.
    `rows`: how many calls of this round want a row of this size (this one included); `pending`: the prefill
    bytes of the calls admitted before it in this round."""
    from .static_engine import StaticEngine

    tokens = request.tokens or request.window
    transient = request.prefill_bytes + pending
    fitting = sorted((e for e in batcher._static.values()
                      if e.policy.name == request.policy.name and e.window >= tokens), key=lambda e: e.window)
    for engine in fitting:  # idle ones included: they have free rows
        if engine.free > 0:
            engine.claim()
            return engine
    for engine in fitting:
        if _grow(engine, request, transient, rows):
            engine.claim()
            return engine
    if any(e.window == request.window for e in fitting):
        return None  # its own size is there, full: wait for a row (at most max_batch calls decode in one engine)
    model = batcher.model
    param = next(model.parameters())
    vocab = model.get_output_embeddings().weight.shape[0]
    row = static_row_bytes(request.policy, model.config, request.window, param.dtype, vocab)
    if not _fits(request, row + transient):
        _free_idle(batcher)
    if _fits(request, row + transient):
        start = max([1] + [n for n in range(2, min(rows, batcher.max_batch) + 1)
                           if _fits(request, n * row + transient)])
        engine = StaticEngine(model, request.policy, batch=batcher.max_batch, window=request.window,
                              guard=request.decoding.guard, rows=start)
        batcher._static[(request.policy.name, request.window, id(engine))] = engine
        engine.claim()
        return engine
    if busy or any(not e.idle for e in batcher._static.values()):
        return None  # rows will free
    budget = request.budget
    raise GPUMemoryExceeded(
        f"a call of {tokens:,} tokens (--kv {request.policy.name}) needs {gb(row)} for its cache in a "
        f"{request.window:,}-token row and {gb(transient)} to prefill its prompt, {gb(row + transient)} in all; "
        f"{gb(max(0, budget.free()))} of the {budget.describe()} the engine may use is free beside the weights "
        "(raise --gpu-memory, shorten the document or the window, or use a compressed --kv such as quant:4 or fp8)")


def _grow(engine: Any, request: Request, transient: int, rows: int = 1) -> bool:
    """Grows `engine` by at least one row within the budget (to the next power of two that holds the round's
    `rows`, else by one): the old rows and the new are both held while the live rows are copied over, then the old
    ones are freed before the call is prefilled."""
    if engine.capacity >= engine.batch:
        return False
    held = engine.stored_bytes()
    wanted = engine.capacity + 1
    doubled = 1 << (engine.capacity + max(1, rows) - 1).bit_length()
    for capacity in dict.fromkeys((min(engine.batch, doubled), wanted)):
        grown = capacity * engine.row_bytes
        if _fits(request, grown) and _fits(request, grown - held + transient):
            engine.grow(capacity)
            return True
    return False


def _free_idle(batcher: Batcher) -> None:
    freed = False
    for key, engine in list(batcher._static.items()):
        if engine.idle:
            engine.release()
            del batcher._static[key]
            freed = True
    if freed:
        give_memory_back()


# -- prefill --------------------------------------------------------------------------------------------------------
def prefill_admitted(batcher: Batcher, admitted: list[Request], live: list[Request]) -> None:
    """Prefills the admitted calls (several at once where they share a chunk size), then takes each one's first
    token: a static call goes into its claimed row, an eager one joins `live`."""
    by_chunk: dict[int, list[Request]] = {}
    for request in admitted:
        by_chunk.setdefault(request.prefill_chunk, []).append(request)
    for chunk, group in by_chunk.items():
        started = time.perf_counter()
        ready = _prefill_group(batcher, group, chunk)
        if ready and ready[0][1].device.type == "cuda":
            torch.cuda.synchronize(ready[0][1].device)
        seconds = time.perf_counter() - started
        for request, logits in ready:
            request.seconds_prefill = seconds
            request.started_decode = time.perf_counter()
            _first_token(batcher, request, logits, live)


def _stopped(batcher: Batcher, group: list[Request]) -> bool:
    """Whether the batcher is stopping (Ctrl-C) or every call of the group was cancelled."""
    return batcher._stopping or all(r.cancelled for r in group)


def _give_up(group: list[Request]) -> None:
    for request in group:
        request.error = KeyboardInterrupt()
        request.done.set()


def _prefill_group(batcher: Batcher, group: list[Request], chunk: int) -> list[tuple[Request, torch.Tensor]]:
    starts = [_start(request) for request in group]
    group = [r for r, s in zip(group, starts) if s is not None]
    starts = [s for s in starts if s is not None]
    if not group:
        return []
    if _stopped(batcher, group):  # stopped (Ctrl-C) or cancelled while it started: no prefill at all
        _give_up(group)
        return []
    caches, prompts, positions = (list(x) for x in zip(*starts))
    try:
        logits, together = prefill_together(batcher.model, caches, prompts, positions, chunk, batched=len(group) > 1,
                                            stop=lambda: _stopped(batcher, group))
        batcher.prefill_forwards += together
        ready = list(zip(group, logits))
        for request, cache, ids, position in zip(group, caches, prompts, positions):
            _started(request, cache, ids, position)
        return ready
    except PrefillStopped:
        _give_up(group)
        return []
    except Exception as exc:  # noqa: BLE001 - retried alone: one call's failure is not the others'
        del caches, starts
        give_memory_back()
        if len(group) == 1:
            _failed(group[0], exc, len(prompts[0]))
            return []
    ready = []
    for request in group:  # alone, each from a fresh start (a reused prefix is looked up again)
        begun = _start(request)
        if begun is None:
            continue
        cache, ids, position = begun
        try:
            logits = prefill_together(batcher.model, [cache], [ids], [position], chunk, batched=False,
                                      stop=lambda: _stopped(batcher, [request]))[0][0]
        except PrefillStopped:
            _give_up([request])
            continue
        except Exception as exc:  # noqa: BLE001
            del cache
            give_memory_back()
            _failed(request, exc, len(ids))
            continue
        _started(request, cache, ids, position)
        ready.append((request, logits))
    return ready


def _start(request: Request) -> tuple[Any, list[int], int] | None:
    try:
        return request.start()
    except Exception as exc:  # noqa: BLE001 - the prefix lookup or its prefill failed: this call's error
        _failed(request, exc, 0)
        return None


def _started(request: Request, cache: Any, ids: list[int], position: int) -> None:
    request.prefill_tokens = len(ids)
    request.cache, request.position = cache, position + len(ids)


def _failed(request: Request, exc: BaseException, tokens: int) -> None:
    if request.static is not None:
        request.static.unclaim()
        request.static = None
    fail(request, call_error(exc, f"prefilling {tokens:,} prompt tokens (--kv {request.policy.name})"))


def _first_token(batcher: Batcher, request: Request, logits: torch.Tensor, live: list[Request]) -> None:
    try:
        token = request.decoding.step(logits)
        if token is not None and request.static is not None:
            request.static.add(request.decoding, request.cache, token, request.position, owner=request)
    except Exception as exc:  # noqa: BLE001
        _failed(request, exc, request.prefill_tokens)
        return
    if token is None:
        if request.static is not None:
            request.static.unclaim()
        batcher._finish(request)
        return
    request.token = token
    if request.static is None:
        live.append(request)
