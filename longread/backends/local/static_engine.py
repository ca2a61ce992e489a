"""The static decode path: rows of one policy in a static cache (kv/static.py), a step with fixed shapes, the
choice of token and the stop checks on the device, and on CUDA one CUDA graph replay per step.

The eager loop (generation.py) reads each token back to the host (`int(argmax)`) and applies the repetition
penalty and guard in Python, so the GPU waits for the host at every token: issue 14 measured 50 ms per token
through the chain against 23.5 ms for the bare loop. Here a step does, on the device: the forward pass, the
output-only repetition penalty (a `seen` mask per row), greedy or Gumbel-max sampling, the EOS check, the
repetition guard (RepetitionGuard's rule, vectorized over the periods on a ring of the last tokens) and the
length cap. The host runs `sync_every` steps, then reads the tokens once and replays them through each row's
host rules (generation.Decoding.accept), which decide the result exactly as the eager loop would; the device
flags only mark rows as done (`device_finish`, which the tests compare with the host's). A row that stops inside
a block costs the steps left in that block.

Continuous batching happens at the syncs: a finished row leaves (the last live row moves into its place, so the
live rows are always the first ones), a waiting sequence joins in a free row. A step runs over the smallest
captured batch size that holds the live rows. Rows are allocated for the live sequences and grown on demand
(issue 21: memory.py has the budget they draw on).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .. import kv as kv_policies
from ..kv.static import StaticPolicyCache, make_static_cache
from . import attention
from .device_rules import FINISH_CODES, SYNC_EVERY, DeviceRules
from .generation import Decoding, RepetitionGuard
from .memory import static_row_bytes

log = logging.getLogger(__name__)



def graph_sizes(batch: int) -> list[int]:
    sizes, n = [], 1
    while n < batch:
        sizes.append(n)
        n *= 2
    return sizes + [batch]


class StaticEngine:
    """Up to `batch` sequences of one policy, decoded in a static cache; `run_block` runs up to `sync_every`
    steps and returns the rows that finished (their Decoding holds the result).

    Rows are allocated for the sequences that are live, not for `batch` (issue 21): `rows` at construction
    (default `batch`), and `grow` reallocates for more, copying the live rows over; `release` frees everything
    while the engine is idle. A row is `claim`ed before its sequence is prefilled (so the memory is there when the
    prefill ends) and `add` fills it. CUDA graphs are captured lazily, one per (batch size, sampling) the first time
    a block runs at that size, also while other rows are live (`_capture` restores their state)."""

    def __init__(self, model: Any, policy: Any, *, batch: int, window: int, guard: RepetitionGuard | None = None,
                 sync_every: int = SYNC_EVERY, graphs: bool | None = None, rows: int | None = None):
        if not attention.install(model):
            raise ValueError("the static engine needs a model whose attention uses transformers' AttentionInterface")
        self.model = model
        self.policy = kv_policies.parse_policy(policy)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.batch, self.window, self.sync_every = batch, window, sync_every
        self.guard = guard or RepetitionGuard()
        self.vocab = model.get_output_embeddings().weight.shape[0]
        self.rows: list[Any] = []  # (decoding, owner) of the live rows, in row order
        self.claimed = 0  # rows promised to sequences being prefilled
        self.capacity = 0
        self.steps_run = 0  # decode steps run (a block runs up to sync_every)
        self.cache: StaticPolicyCache | None = None
        self.rules: DeviceRules | None = None
        self.graphs: dict[tuple[int, bool], Any] = {}
        self._pool: Any = None
        want = self.device.type == "cuda" if graphs is None else graphs
        self._use_graphs = want and self.device.type == "cuda"
        self.grow(batch if rows is None else rows)

    # -- memory --------------------------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        """Rows for `capacity` sequences (at most `batch`); the live rows keep their state."""
        capacity = min(self.batch, capacity)
        if capacity <= self.capacity:
            return
        live = len(self.rows)
        cache = make_static_cache(self.policy, self.model.config, batch=capacity, window=self.window,
                                  device=self.device, dtype=self.dtype)
        rules = DeviceRules(capacity, self.vocab, self.device, self.guard, self.sync_every)
        if self.cache is not None and self.rules is not None and live:
            for new, old in zip(cache.row_tensors(), self.cache.row_tensors()):
                new[:live].copy_(old[:live])
            for name in ("host_seen", "host_length", "host_low"):
                getattr(cache, name)[:live] = getattr(self.cache, name)[:live]
            for new, old in zip(rules.row_tensors(), self.rules.row_tensors()):
                new[:live].copy_(old[:live])
            rules.eos = self.rules.eos
        self.graphs.clear()  # they point at the old buffers
        self._pool = None  # and their memory pool goes with them
        self.cache, self.rules, self.capacity = cache, rules, capacity
        self._stub_mask = torch.ones(capacity, 1, 1, 1, dtype=torch.bool, device=self.device)
        self.sizes = graph_sizes(capacity)
        if not live:
            self._reset()

    def release(self) -> None:
        """Frees the buffers and graphs of an idle engine (the next `grow` allocates again)."""
        assert self.idle, "release() needs an idle engine"
        self.graphs.clear()
        self.cache = self.rules = None
        self._pool = None
        self.capacity = 0

    @property
    def idle(self) -> bool:
        return not self.rows and not self.claimed

    @property
    def row_bytes(self) -> int:
        return static_row_bytes(self.policy, self.model.config, self.window, self.dtype, self.vocab)

    def stored_bytes(self) -> int:
        return self.capacity * self.row_bytes

    # -- the step ------------------------------------------------------------------------------------------
    def _step(self, n: int, sampling: bool) -> None:
        cache, rules = self.cache, self.rules
        cache.active = n
        cache.begin_step()
        out = self.model(input_ids=rules.tokens[:n], position_ids=rules.positions[:n], past_key_values=cache,
                         attention_mask=self._stub_mask[:n], use_cache=True, logits_to_keep=1)
        cache.end_step()
        rules.accept(rules.choose(out.logits[:, -1, :], sampling))

    def _row_state(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(tensor, copy) of everything a step changes in rows [:n] besides the slot it writes."""
        cache, rules = self.cache, self.rules
        tensors = [cache.seen, cache.length, cache.low, *rules.row_tensors()]
        return [(t, t[:n].clone()) for t in tensors] + [(rules.step_index, rules.step_index.clone())]

    @torch.inference_mode()
    def _capture(self, n: int, sampling: bool) -> Any:
        """One CUDA graph of a step over n rows. The warm-up step runs for real: each row writes its current
        token's key and value at its next slot, which is what the first replay writes there again; every counter
        it moved is put back."""
        saved = self._row_state(n)
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.rules.step_index.zero_()
                self._step(n, sampling)
            torch.cuda.current_stream().wait_stream(stream)
            for tensor, copy in saved:
                tensor[: copy.shape[0]].copy_(copy)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._step(n, sampling)
            torch.cuda.synchronize()
            return graph
        except Exception as exc:  # noqa: BLE001 - a model the graph cannot capture still decodes, eagerly
            log.warning("CUDA graph capture failed, static steps run eagerly: %s", exc)
            self._use_graphs = False
            return None
        finally:
            for tensor, copy in saved:
                tensor[: copy.shape[0]].copy_(copy)

    def _reset(self) -> None:
        for t in (self.cache.seen, self.cache.length, self.cache.low):
            t.zero_()
        self.rules.done.fill_(True)
        self.rules.step_index.zero_()

    def warm(self, sampling: bool = False) -> None:
        """Captures now the graph the live rows' next block replays (a benchmark times replays, not the capture)."""
        n = self.size_for(len(self.rows))
        if self._use_graphs and (n, sampling) not in self.graphs:
            self.graphs[(n, sampling)] = self._capture(n, sampling)

    def size_for(self, live: int) -> int:
        return next(s for s in self.sizes if s >= live)

    # -- rows ----------------------------------------------------------------------------------------------
    @property
    def free(self) -> int:
        """Rows allocated and neither live nor claimed."""
        return self.capacity - len(self.rows) - self.claimed

    def claim(self) -> None:
        """Reserves a free row for a sequence about to be prefilled (`add` fills it, `unclaim` gives it back)."""
        if self.free < 1:
            raise RuntimeError("no free row to claim")
        self.claimed += 1

    def unclaim(self) -> None:
        self.claimed = max(0, self.claimed - 1)

    def add(self, decoding: Decoding, cache: Any, token: int, position: int, owner: Any = None) -> None:
        """A sequence whose prompt is in `cache` (dynamic, batch 1) and whose first token `token` was accepted
        (into a claimed row, or a free one)."""
        if self.claimed:
            self.claimed -= 1
        elif self.free < 1:
            raise RuntimeError("no free row: claim() one first")
        row = len(self.rows)
        self.cache.load_row(row, cache)
        self.rules.set_eos(decoding.eos_ids)
        self.rules.load(row, decoding, token, position)
        self.rows.append((decoding, owner))

    @torch.inference_mode()
    def run_block(self) -> list[tuple[Decoding, Any]]:
        """Up to sync_every steps over the live rows, then one read of the tokens; the rows that finished."""
        live = len(self.rows)
        if not live:
            return []
        n = self.size_for(live)
        sampling = any(d.temperature > 0 for d, _ in self.rows)
        # No row needs more steps than its tokens left (the host knows that bound without reading anything).
        steps = min(self.sync_every, max(d.max_new_tokens - len(d.out) for d, _ in self.rows))
        for row in range(live, n):  # stale rows of the batch size: keep them done
            self.rules.done[row] = True
        graph = self.graphs.get((n, sampling))
        if graph is None and self._use_graphs:
            graph = self.graphs[(n, sampling)] = self._capture(n, sampling)
        self.rules.step_index.zero_()
        self.steps_run += steps
        for _ in range(steps):
            if graph is not None:
                graph.replay()
            else:
                self._step(n, sampling)
            self.cache.active = n
            self.cache.after_step()
        tokens = self.rules.out[:live, :steps].tolist()  # the one read of the block
        finished, kept = [], []
        for (decoding, owner), row_tokens in zip(self.rows, tokens):
            for token in row_tokens:
                if not decoding.accept(token):
                    break
            (finished if decoding.done else kept).append((decoding, owner))
        self._compact([d for d, _ in kept])
        return finished

    def fail_rows(self) -> list[tuple[Decoding, Any]]:
        """Drops every live row (a step failed: their state is unknown) and returns them."""
        dropped, self.rows = self.rows, []
        if self.rules is not None:
            self.rules.done.fill_(True)
        return dropped

    def device_finish(self) -> list[str | None]:
        """The device's stop flags of the live rows (for tests: they must agree with the host rules)."""
        codes = self.rules.finish[: len(self.rows)].tolist()
        return [FINISH_CODES.get(int(c)) for c in codes]

    def _compact(self, keep: list[Decoding]) -> None:
        """Drops finished rows; the live ones move up so that they stay first."""
        survivors = [(i, entry) for i, entry in enumerate(self.rows) if entry[0] in keep]
        for target, (source, _) in enumerate(survivors):
            if source != target:
                self.cache.move_row(source, target)
                for t in self.rules.row_tensors():
                    t[target].copy_(t[source])
        self.rows = [entry for _, entry in survivors]
        for row in range(len(self.rows), self.capacity):
            self.rules.done[row] = True
