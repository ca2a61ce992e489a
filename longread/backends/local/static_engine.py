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
captured batch size that holds the live rows.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .. import kv as kv_policies
from ..kv.static import StaticPolicyCache, make_static_cache
from . import attention
from .generation import Decoding, RepetitionGuard

log = logging.getLogger(__name__)

SYNC_EVERY = 16
FINISH_CODES = {1: "stop", 2: "repetition", 3: "length"}


def graph_sizes(batch: int) -> list[int]:
    sizes, n = [], 1
    while n < batch:
        sizes.append(n)
        n *= 2
    return sizes + [batch]


class DeviceRules:
    """The penalty, the choice and the stops of `Decoding`, as tensor ops over rows (graph-capturable)."""

    def __init__(self, batch: int, vocab: int, device: Any, guard: RepetitionGuard, sync_every: int):
        self.device = device
        long = dict(dtype=torch.long, device=device)
        self.tokens = torch.zeros(batch, 1, **long)  # the token each row feeds next
        self.positions = torch.zeros(batch, 1, **long)
        self.seen = torch.zeros(batch, vocab, dtype=torch.bool, device=device)
        self.count = torch.zeros(batch, **long)  # tokens written (the host's len(out))
        self.max_new = torch.ones(batch, **long)
        self.penalty = torch.ones(batch, dtype=torch.float32, device=device)
        self.temperature = torch.zeros(batch, dtype=torch.float32, device=device)
        self.done = torch.ones(batch, dtype=torch.bool, device=device)
        self.finish = torch.zeros(batch, dtype=torch.int8, device=device)
        self.out = torch.zeros(batch, sync_every, **long)
        self.step_index = torch.zeros(1, **long)
        self.eos = torch.zeros(0, **long)
        # The guard: for period p, a loop is the last span(p) tokens repeating with period p, i.e. hist[j] ==
        # hist[j - p] for the last span(p) - p positions j, once at least span(p) tokens were written.
        periods = list(range(1, guard.max_period + 1))
        spans = [p * max(guard.repeats, -(-guard.min_span // p)) for p in periods]
        self.history = max(spans) if spans else 1
        self.hist = torch.full((batch, self.history), -1, **long)
        h = self.history
        j = torch.arange(h)
        self.guard_index = torch.stack([(j - p).clamp(min=0) for p in periods]).to(device) if periods else None
        self.guard_valid = (torch.stack([j >= h - s + p for p, s in zip(periods, spans)]).to(device)
                            if periods else None)
        self.guard_span = torch.tensor(spans, **long) if periods else None

    def row_tensors(self) -> list[torch.Tensor]:
        return [self.tokens, self.positions, self.seen, self.count, self.max_new, self.penalty, self.temperature,
                self.done, self.finish, self.hist, self.out]

    def set_eos(self, eos: set[int]) -> None:
        if set(self.eos.tolist()) != set(eos):
            self.eos = torch.tensor(sorted(eos), dtype=torch.long, device=self.device)

    def load(self, row: int, decoding: Decoding, token: int, position: int) -> None:
        """A row that starts decoding after `token` (chosen on the host from the prefill's logits)."""
        self.tokens[row, 0] = token
        self.positions[row, 0] = position
        self.seen[row] = False
        for t in set(decoding.out):
            self.seen[row, t] = True
        self.count[row] = len(decoding.out)
        self.max_new[row] = decoding.max_new_tokens
        self.penalty[row] = decoding.repetition_penalty
        self.temperature[row] = decoding.temperature
        self.done[row] = False
        self.finish[row] = 0
        tail = decoding.out[-self.history :]
        self.hist[row] = -1
        if tail:
            self.hist[row, self.history - len(tail) :] = torch.tensor(tail, device=self.device)

    def choose(self, logits: torch.Tensor, sampling: bool) -> torch.Tensor:
        """Next tokens (n,) from the last logits (n, vocab): Decoding.pick's rules, row by row."""
        n = logits.shape[0]
        scores = logits.float()
        p = self.penalty[:n, None]
        scores = torch.where(self.seen[:n], torch.where(scores > 0, scores / p, scores * p), scores)
        greedy = scores.argmax(dim=-1)
        if not sampling:
            return greedy
        t = self.temperature[:n, None]
        gumbel = -torch.log(-torch.log(torch.rand_like(scores).clamp_(min=1e-20)))
        sampled = (scores / t.clamp(min=1e-6) + gumbel).argmax(dim=-1)
        return torch.where(t[:, 0] > 0, sampled, greedy)

    def accept(self, token: torch.Tensor) -> None:
        """Decoding.accept on the device: EOS (not written), then the guard, then the length cap."""
        n = token.shape[0]
        live = ~self.done[:n]
        eos = torch.isin(token, self.eos) if self.eos.numel() else torch.zeros_like(live)
        write = live & ~eos
        shifted = torch.cat([self.hist[:n, 1:], token[:, None]], dim=1)
        self.hist[:n].copy_(torch.where(write[:, None], shifted, self.hist[:n]))
        self.count[:n] += write.long()
        self.seen[:n].scatter_(1, token[:, None], write[:, None] | self.seen[:n].gather(1, token[:, None]))
        loop = self._looping(n) & write
        length = write & (self.count[:n] >= self.max_new[:n])
        code = torch.where(eos, 1, torch.where(loop, 2, torch.where(length, 3, 0))).to(torch.int8)
        newly = live & (code > 0)
        self.finish[:n].copy_(torch.where(newly, code, self.finish[:n]))
        self.done[:n] |= newly
        self.out[:n].scatter_(1, self.step_index.clamp(max=self.out.shape[1] - 1).expand(n, 1), token[:, None])
        self.step_index += 1
        self.tokens[:n, 0].copy_(token)
        self.positions[:n] += 1

    def _looping(self, n: int) -> torch.Tensor:
        if self.guard_index is None:
            return torch.zeros(n, dtype=torch.bool, device=self.device)
        hist = self.hist[:n]
        shifted = hist[:, self.guard_index]  # (n, periods, history)
        same = (hist[:, None, :] == shifted) | ~self.guard_valid
        return (same.all(dim=-1) & (self.count[:n, None] >= self.guard_span)).any(dim=-1)


class StaticEngine:
    """Up to `batch` sequences of one policy, decoded in a static cache; `run_block` runs up to `sync_every`
    steps and returns the rows that finished (their Decoding holds the result)."""

    def __init__(self, model: Any, policy: Any, *, batch: int, window: int, guard: RepetitionGuard | None = None,
                 sync_every: int = SYNC_EVERY, graphs: bool | None = None):
        if not attention.install(model):
            raise ValueError("the static engine needs a model whose attention uses transformers' AttentionInterface")
        self.model = model
        self.policy = kv_policies.parse_policy(policy)
        param = next(model.parameters())
        self.device = param.device
        self.batch, self.window, self.sync_every = batch, window, sync_every
        self.cache: StaticPolicyCache = make_static_cache(self.policy, model.config, batch=batch, window=window,
                                                          device=self.device, dtype=param.dtype)
        vocab = model.get_output_embeddings().weight.shape[0]
        self.rules = DeviceRules(batch, vocab, self.device, guard or RepetitionGuard(), sync_every)
        self.rows: list[Any] = []  # (decoding, owner) of the live rows, in row order
        self._stub_mask = torch.ones(batch, 1, 1, 1, dtype=torch.bool, device=self.device)
        self.sizes = graph_sizes(batch)
        self.graphs: dict[tuple[int, bool], Any] = {}
        want = self.device.type == "cuda" if graphs is None else graphs
        if want and self.device.type == "cuda":
            self._capture_all()

    # -- the step ------------------------------------------------------------------------------------------
    def _step(self, n: int, sampling: bool) -> None:
        cache, rules = self.cache, self.rules
        cache.active = n
        cache.begin_step()
        out = self.model(input_ids=rules.tokens[:n], position_ids=rules.positions[:n], past_key_values=cache,
                         attention_mask=self._stub_mask[:n], use_cache=True, logits_to_keep=1)
        cache.end_step()
        rules.accept(rules.choose(out.logits[:, -1, :], sampling))

    @torch.inference_mode()
    def _capture_all(self) -> None:
        """One CUDA graph per (batch size, sampling), captured before any row is live (the warm-up steps write
        into free rows, whose state is reset afterwards)."""
        try:
            pool = torch.cuda.graph_pool_handle()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            for n in self.sizes:
                for sampling in (False, True):
                    with torch.cuda.stream(stream):
                        for _ in range(2):
                            self.rules.step_index.zero_()  # the warm-ups write the block's first columns
                            self._step(n, sampling)
                        self.rules.step_index.zero_()
                    torch.cuda.current_stream().wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        self._step(n, sampling)
                    self.graphs[(n, sampling)] = graph
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - a model the graph cannot capture still decodes, eagerly
            log.warning("CUDA graph capture failed, static steps run eagerly: %s", exc)
            self.graphs.clear()
        self._reset()

    def _reset(self) -> None:
        for t in (self.cache.seen, self.cache.length, self.cache.low):
            t.zero_()
        self.rules.done.fill_(True)
        self.rules.step_index.zero_()

    def size_for(self, live: int) -> int:
        return next(s for s in self.sizes if s >= live)

    # -- rows ----------------------------------------------------------------------------------------------
    @property
    def free(self) -> int:
        return self.batch - len(self.rows)

    def add(self, decoding: Decoding, cache: Any, token: int, position: int, owner: Any = None) -> None:
        """A sequence whose prompt is in `cache` (dynamic, batch 1) and whose first token `token` was accepted."""
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
        self.rules.step_index.zero_()
        graph = self.graphs.get((n, sampling))
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
        for row in range(len(self.rows), self.batch):
            self.rules.done[row] = True
