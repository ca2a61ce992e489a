"""`snap:N`: query-agnostic importance eviction down to N tokens per layer and head.

SnapKV (Li et al. 2024): score every key by the attention the last `window` prompt tokens pay it (averaged over
the window, smoothed by a 1-D pooling), keep the best per head, always keep the window itself. The scores use no
question: the observation window is the end of what has been fed so far, so the compressed state of a document
segment is the same whatever is asked about it later (which is what lets the prefix cache reuse it).

Applied again whenever the cache outgrows N, during chunked prefill (at the end of each chunk) and during
decoding, which is H2O's heavy-hitter rule (Zhang et al. 2023) with SnapKV's score. To spread the cost of
scoring over several decode steps, each eviction goes down to N - slack tokens; the cache never holds more than
N tokens between forward passes (a forward pass itself sees its own new tokens on top).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .base import KVLayer, KVPolicy
from .observe import window_scores
from .static import StaticPolicyCache


def default_window(budget: int) -> int:
    return max(1, min(32, budget // 4))


class ScoredPolicy(KVPolicy):
    """A policy that keeps tokens by importance (snap, mixed): its dynamic layers (ScoredLayer) and its static form
    (StaticSnap) ask `score()` which tokens matter, and keep the observation window (its `window` last tokens)
    whatever their scores. A new importance rule is a subclass that overrides `score()` alone (kvpress's seam):
    it runs on its parent's eviction, dynamic and static."""

    window: int
    pool: int

    def score(self, queries: torch.Tensor, query_positions: torch.Tensor, keys: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
        """The importance (b, kv_heads, L) of keys (b, kv_heads, L, d) at `positions` (b, kv_heads, L; -1 for keys
        known to precede the window), given the window's queries (b, q_heads, w, d) at `query_positions` (w,);
        the lowest leave first (dropped by snap, demoted by mixed). SnapKV (Li et al. 2024, "SnapKV: LLM Knows
        What You are Looking for Before Generation"): the attention the window pays each key, averaged, pooled
        along positions (observe.py)."""
        return window_scores(queries, query_positions, keys, positions, self.pool)

    def ranking(self, queries: torch.Tensor, query_positions: torch.Tensor, keys: torch.Tensor,
                positions: torch.Tensor, seen: int) -> torch.Tensor:
        """`score()`, with the observation window (the keys at the `window` latest of `seen` positions) ranked
        above every other key: SnapKV keeps it verbatim. The one rule of the dynamic layers and the static form."""
        scores = self.score(queries, query_positions, keys, positions)
        return scores.masked_fill(positions >= seen - self.window, float("inf"))


@dataclass(frozen=True)
class SnapPolicy(ScoredPolicy):
    budget: int
    window: int = field(default=0)  # 0: min(32, N // 4)
    pool: int = 7

    def __post_init__(self) -> None:
        if self.budget < 8:
            raise ValueError(f"snap:N needs N >= 8, got {self.budget}")
        if not self.window:
            object.__setattr__(self, "window", default_window(self.budget))

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"snap:{self.budget}"

    @property
    def budget_tokens(self) -> int:
        return self.budget

    @property
    def slack(self) -> int:
        return max(1, min(self.window, self.budget // 8))

    def new_layer(self) -> "SnapLayer":
        return SnapLayer(self)

    def static_form(self) -> type[StaticPolicyCache]:
        return StaticSnap


class ScoredLayer(KVLayer):
    """Full-precision tokens with their positions and the latest observation window's queries (snap and mixed)."""

    wants_queries = True
    policy: ScoredPolicy

    def __init__(self, policy: ScoredPolicy) -> None:
        super().__init__(policy)
        self.window: int = policy.window
        self.positions: torch.Tensor | None = None  # (b, kv_heads, L) int32, sorted along L
        self.queries: torch.Tensor | None = None  # (b, q_heads, <= window, d): the latest window's queries
        self._pending: torch.Tensor | None = None

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def observe(self, queries: torch.Tensor) -> None:
        self._pending = queries

    def _append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, h, n, _ = key_states.shape
        new_positions = torch.arange(self.seen, self.seen + n, device=key_states.device, dtype=torch.int32)
        new_positions = new_positions.expand(b, h, n)
        self.seen += n
        if self.keys is None:
            self.keys, self.values, self.positions = key_states, value_states, new_positions.contiguous()
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
            self.positions = torch.cat([self.positions, new_positions], dim=-1)
        if self._pending is not None:
            queries = self._pending if self.queries is None else torch.cat([self.queries, self._pending], dim=-2)
            self.queries = queries[..., -self.window :, :].contiguous()
            self._pending = None

    def _query_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, their positions): the hooked queries, or the window's own keys when no hook ran."""
        if self.queries is not None:
            w = self.queries.shape[-2]
            return self.queries, torch.arange(self.seen - w, self.seen, device=self.queries.device)
        # Fallback for attention modules the hook does not understand: keys as proxy queries.
        w = min(self.window, self.keys.shape[-2])
        return self.keys[..., -w:, :], torch.arange(self.seen - w, self.seen, device=self.keys.device)

    def _scores(self, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        queries, query_positions = self._query_window()
        return self.policy.ranking(queries, query_positions, keys, positions, self.seen)

    def _select(self, keep: torch.Tensor) -> None:
        """Keeps the (b, kv_heads, k) indices of self.keys/values/positions, in position order."""
        keep = keep.sort(dim=-1).values
        self.positions = self.positions.gather(-1, keep)
        index = keep.unsqueeze(-1).expand(-1, -1, -1, self.keys.shape[-1])
        self.keys = self.keys.gather(-2, index)
        self.values = self.values.gather(-2, index)

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.keys is None:
            return {}
        out = {"keys": self.keys, "values": self.values, "positions": self.positions}
        if self.queries is not None:
            out["queries"] = self.queries
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.lazy_initialization(tensors["keys"], tensors["values"])
        self.keys, self.values, self.positions = tensors["keys"], tensors["values"], tensors["positions"]
        self.queries = tensors.get("queries")


class SnapLayer(ScoredLayer):
    policy: SnapPolicy

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self._append(key_states, value_states)
        keys, values = self.keys, self.values
        if self.keys.shape[-2] > self.policy.budget:
            target = self.policy.budget - self.policy.slack
            self._select(self._scores(self.keys, self.positions).topk(target, dim=-1).indices)
        return keys, values


# -- the static form (kv/static.py) -------------------------------------------------------------------------------
class StaticSnap(StaticPolicyCache):
    """Filled slots [0, length) kept in position order (SnapKV's pooling runs along that order), the new token at
    slot `length`; at budget + 1 the dynamic rule's eviction, per row."""

    policy: SnapPolicy

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wants_queries = True

    def main_slots(self) -> int:
        return self.policy.budget + 1

    def _allocate(self) -> None:
        super()._allocate()
        w = self.policy.window
        self.positions = [torch.full((self.batch, self.kv_heads, self.slots), -1, dtype=torch.int32,
                                     device=self.device) for _ in range(self.n_layers)]
        self.queries = [torch.zeros(self.batch, self.q_heads, w, self.head_dim, dtype=self.dtype, device=self.device)
                        for _ in range(self.n_layers)]

    def tensors(self) -> list[torch.Tensor]:
        return [*super().tensors(), *self.positions, *self.queries]

    def observe(self, index: int, queries: torch.Tensor) -> None:
        """A decode step's query (rows, q_heads, 1, d) into the ring slot seen % window."""
        n = queries.shape[0]
        slot = self.seen[:n] % self.policy.window
        index_ = slot.view(n, 1, 1, 1).expand(n, queries.shape[1], 1, queries.shape[-1])
        self.queries[index][:n].scatter_(2, index_, queries[..., -1:, :])

    def write(self, index: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().write(index, key_states, value_states)
        n = key_states.shape[0]
        slot = self.write_slot[:n].view(n, 1, 1).expand(n, self.kv_heads, 1)
        self.positions[index][:n].scatter_(2, slot, self.seen[:n].view(n, 1, 1).expand(n, self.kv_heads, 1)
                                           .to(torch.int32))

    def _load_scored(self, row: int, index: int, layer: Any) -> int:
        length = layer.keys.shape[-2]
        self.keys[index][row, :, :length] = layer.keys[0]
        self.values[index][row, :, :length] = layer.values[0]
        self.positions[index][row, :, :length] = layer.positions[0]
        self.positions[index][row, :, length:] = -1
        if layer.queries is not None:
            w = layer.queries.shape[-2]
            slots = torch.arange(layer.seen - w, layer.seen, device=self.device) % self.policy.window
            self.queries[index][row, :, slots] = layer.queries[0]
        return length

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        return self._load_scored(row, index, layer), 0

    def _window_queries(self, row: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The row's last `window` queries in time order (the order the dynamic layer keeps) and positions."""
        seen, w = self.host_seen[row], self.policy.window
        count = min(seen, w)
        positions = torch.arange(seen - count, seen, device=self.device)
        return self.queries[index][row : row + 1, :, positions % w], positions

    def _scores(self, row: int, index: int, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        queries, query_positions = self._window_queries(row, index)
        return self.policy.ranking(queries, query_positions, keys, positions, self.host_seen[row])

    def _maintain(self) -> None:
        for row in range(self.active):
            if self.host_length[row] > self.policy.budget:
                self._evict(row)

    def _evict(self, row: int) -> None:
        length = self.host_length[row]
        target = self.policy.budget - self.policy.slack
        for index in range(self.n_layers):
            keys = self.keys[index][row : row + 1, :, :length]
            positions = self.positions[index][row : row + 1, :, :length]
            keep = self._scores(row, index, keys, positions).topk(target, dim=-1).indices
            self._keep(row, index, keep, length)
        self.length[row] = target
        self.host_length[row] = target

    def _keep(self, row: int, index: int, keep: torch.Tensor, length: int) -> None:
        keep = keep.sort(dim=-1).values
        target = keep.shape[-1]
        gather = keep.unsqueeze(-1).expand(-1, -1, -1, self.head_dim)
        keys = self.keys[index][row : row + 1, :, :length].gather(-2, gather)
        values = self.values[index][row : row + 1, :, :length].gather(-2, gather)
        positions = self.positions[index][row : row + 1, :, :length].gather(-1, keep)
        self.keys[index][row, :, :target] = keys[0]
        self.values[index][row, :, :target] = values[0]
        self.positions[index][row, :, :target] = positions[0]
        self.positions[index][row, :, target:] = -1

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        return self.positions[index][row, :, : self.host_length[row]].cpu()

