"""One forward over several calls' caches, and their prefill together (the batcher's and admission's shared tool).

Row i of a batched forward runs through call i's own cache (any policy, any length): the linear layers see the
whole batch, attention runs per call over its own keys and values (`RaggedCache`, through the attention hook of
attention.py), so there is no padding and no copy of the caches into one tensor. `prefill_together` prefills
several prompts that way, chunk by chunk, each keeping the chunk boundaries of its own `prefill`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ..kv.base import CacheAttention
from . import attention
from .generation import prefill


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
