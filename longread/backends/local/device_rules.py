"""The static engine's per-row decoding rules on the device (static_engine.py): the repetition penalty, the choice
of token, EOS, the repetition guard and the length cap of generation.Decoding, as tensor ops over rows, so a step
needs no read by the host and a CUDA graph can replay it. memory.py sizes a row with `DeviceRules.row_shapes`.
"""

from __future__ import annotations

from typing import Any

import torch

from .generation import Decoding, RepetitionGuard

SYNC_EVERY = 16  # steps between two reads of the tokens by the host
FINISH_CODES = {1: "stop", 2: "repetition", 3: "length"}  # DeviceRules.finish, as Decoding's finish reasons


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

    @staticmethod
    def row_shapes(vocab: int, guard: RepetitionGuard | None = None, sync_every: int = SYNC_EVERY
                   ) -> list[torch.Tensor]:
        """One row's tensors on the `meta` device (memory.py counts their bytes; nothing is allocated)."""
        return DeviceRules(1, vocab, "meta", guard or RepetitionGuard(), sync_every).row_tensors()

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
