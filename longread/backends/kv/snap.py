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

import torch

from .base import KVLayer, KVPolicy
from .observe import window_scores


def default_window(budget: int) -> int:
    return max(1, min(32, budget // 4))


@dataclass(frozen=True)
class SnapPolicy(KVPolicy):
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


class ScoredLayer(KVLayer):
    """Full-precision tokens with their positions and the latest observation window's queries (snap and mixed)."""

    wants_queries = True

    def __init__(self, policy: KVPolicy) -> None:
        super().__init__(policy)
        self.window: int = policy.window  # type: ignore[attr-defined]
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
        scores = window_scores(queries, query_positions, keys, positions, self.policy.pool)  # type: ignore[attr-defined]
        # The observation window itself is always kept (SnapKV keeps it verbatim).
        return scores.masked_fill(positions >= self.seen - self.window, float("inf"))

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
