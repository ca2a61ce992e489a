"""What a failure inside the batched engine becomes: one clear error for the calls it touched, never a dead
batcher (issue 21, item 2).

- A prefill (admission) belongs to one call: if prefills batched together fail, each call is retried alone
  (admission.py), and what still fails is that call's error.
- A decode step is shared: the calls in it fail together (their caches are in an unknown state), each with the
  same error; the other calls (other engines, calls still waiting, later calls) go on.
- Out of memory: the cached blocks are given back to the device before anything else runs, and the error says
  what was being done with how many tokens.
- A step that failed inside the decode attention kernels (not out of memory) turns them off for the process
  (quant_attention.disable): the next calls run the reference path.
"""

from __future__ import annotations

import gc
import logging
from typing import Any, Sequence

import torch

from ...errors import ModelError

log = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def give_memory_back() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


def call_error(exc: BaseException, what: str) -> BaseException:
    """The error a call gets: out of memory becomes a ModelError naming what was being done; anything else that
    is the call's own (a bad prompt, a row too small) stays what it is."""
    if is_out_of_memory(exc):
        error = ModelError(f"out of GPU memory while {what} ({first_line(exc)}); the engine goes on with the other "
                           "calls: lower --gpu-memory for other processes on the card, use a smaller --window, or a "
                           "compressed --kv")
        error.__cause__ = exc
        return error
    return exc


def fail(request: Any, error: BaseException) -> None:
    request.error = error
    request.done.set()


def step_failed(exc: BaseException, requests: Sequence[Any], what: str) -> None:
    """Every call in a failed step gets one ModelError naming the step; the batcher goes on."""
    log.warning("%s failed for %d call(s): %s", what, len(requests), first_line(exc))
    if is_out_of_memory(exc):
        give_memory_back()
        error: BaseException = call_error(exc, f"{what} over {len(requests)} call(s)")
    else:
        error = ModelError(f"the local engine failed in {what} ({first_line(exc)}); the other calls go on")
        error.__cause__ = exc
    for request in requests:
        if not request.done.is_set():
            request.error = error
            request.done.set()


def block_failed(exc: BaseException, engine: Any, requests: Sequence[Any]) -> None:
    """A static engine's block failed: its calls fail; a kernel failure turns the decode kernels off."""
    if not is_out_of_memory(exc):
        from ..kv import quant_attention

        if quant_attention.enabled() and engine.device.type == "cuda":
            quant_attention.disable(first_line(exc))
    step_failed(exc, requests, f"a decode block of the static engine ({engine.policy.name})")
