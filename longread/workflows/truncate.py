"""`truncate` (baseline): the head and the tail of the document that fit one window, in one call.

What a long-context pipeline does when a document is too long: keep its beginning and its end (where
introductions and conclusions sit; the "lost in the middle" effect makes the middle the cheapest part to drop,
Liu et al., TACL 2024). The text is taken in whole ~300-token pieces, from both ends in turn, so the cut falls
on paragraph and sentence boundaries; a marker says how many tokens were left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..agents import DirectReader
from ..results import Citation
from ..segmenting import Segment
from .base import CHUNK_TOKENS, ReadingContext
from .one_call import OneCallStrategy, Selection


def head_and_tail(ctx: ReadingContext, pieces: list[Segment], head: list[Segment], tail: list[Segment]) -> str:
    text = ctx.document.text
    if len(head) + len(tail) >= len(pieces):
        return text
    left_out = sum(p.tokens for p in pieces[len(head): len(pieces) - len(tail)])
    head_text = text[: head[-1].end] if head else ""
    tail_text = text[tail[0].start:] if tail else ""
    return head_text + ctx.prompts.omitted.format(tokens=f"{left_out:,}") + tail_text


@dataclass
class TruncateStrategy(OneCallStrategy):
    """As much of the beginning and end as fits, in one call."""

    name: ClassVar[str] = "truncate"
    piece_tokens: int = CHUNK_TOKENS

    def select(self, ctx: ReadingContext, reader: DirectReader, question: str | None) -> Selection:
        pieces = ctx.segments(self.piece_tokens)
        room = reader.room() - ctx.model.tokenizer.count(ctx.prompts.omitted.format(tokens="1,000,000"))
        head: list[Segment] = []
        tail: list[Segment] = []
        used, lo, hi = 0, 0, len(pieces) - 1
        while lo <= hi:
            take_head = sum(p.tokens for p in head) <= sum(p.tokens for p in tail)
            piece = pieces[lo] if take_head else pieces[hi]
            if used + piece.tokens > room:
                other = pieces[hi] if take_head else pieces[lo]
                if used + other.tokens > room:
                    break
                take_head, piece = not take_head, other
            used += piece.tokens
            if take_head:
                head.append(piece)
                lo += 1
            else:
                tail.insert(0, piece)
                hi -= 1
        text = head_and_tail(ctx, pieces, head, tail)
        while not reader.fits(text) and (head or tail):
            # Joins can merge tokens differently than the pieces counted alone: drop the innermost piece of
            # the longer end.
            if sum(p.tokens for p in head) >= sum(p.tokens for p in tail) and head:
                head.pop()
            else:
                tail.pop(0)
            text = head_and_tail(ctx, pieces, head, tail)
        if text == ctx.document.text:
            spans = [(0, len(text))]
        else:
            spans = [(part[0].start, part[-1].end) for part in (head, tail) if part]
        kept = sum(p.tokens for p in head + tail)
        return Selection(text, [Citation(i, a, b) for i, (a, b) in enumerate(spans)], len(spans),
                         extras={"kept_tokens": kept, "left_out_tokens": sum(p.tokens for p in pieces) - kept})
