"""`rag` (baseline): retrieval-augmented generation in one call (Lewis et al., NeurIPS 2020, in its simplest form).

The document is cut into ~300-token chunks on paragraph and sentence boundaries, embedded with the memory's
embedder (all-MiniLM-L6-v2), and the chunks most similar to the question fill one window-sized prompt, put back in
document order so the text reads as it was written. One call. It has nothing to retrieve for without a question,
so summary mode is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..agents import DirectReader
from ..results import Citation
from ..segmenting import Segment
from .base import CHUNK_TOKENS, ReadingContext
from .one_call import OneCallStrategy, Selection


def excerpts_text(ctx: ReadingContext, chunks: list[Segment]) -> str:
    prompts = ctx.prompts
    body = "".join(prompts.excerpt.format(number=i + 1, text=c.text.strip()) for i, c in enumerate(chunks))
    return prompts.excerpt_heading + body


def best_chunks(ctx: ReadingContext, reader: DirectReader, query: str, chunk_tokens: int, budget: int = 0,
                order: str = "document") -> tuple[list[Segment], int]:
    """The best chunks for the query that fit the reader's prompt (and `budget` tokens, when set), in document
    order (or, with order="relevance", best last, next to the question), and how many chunks there were. Sizes
    are summed from the chunks' own counts first (cheap), then the whole prompt is checked exactly."""
    ranked = ctx.rank_chunks(query, chunk_tokens)
    room = reader.room()
    frame = ctx.model.tokenizer.count(ctx.prompts.excerpt.format(number=99, text="")) + 1
    chosen: list[Segment] = []
    used = ctx.model.tokenizer.count(ctx.prompts.excerpt_heading)
    for _, chunk in ranked:
        # The budget never keeps out the best chunk that fits: a budget below one chunk means "the best one".
        over_budget = budget > 0 and chosen and used + chunk.tokens + frame > budget
        if used + chunk.tokens + frame <= room and not over_budget:
            chosen.append(chunk)
            used += chunk.tokens + frame
    scores = {c.index: s for s, c in ranked}
    chosen.sort(key=(lambda c: (scores[c.index], -c.start)) if order == "relevance" else (lambda c: c.start))
    while chosen and not reader.fits(excerpts_text(ctx, chosen)):
        # Joins can merge tokens differently than the pieces counted alone: drop the least similar chunk.
        chosen.remove(min(chosen, key=lambda c: scores[c.index]))
    return chosen, len(ranked)


@dataclass
class RagStrategy(OneCallStrategy):
    """The best ~300-token chunks by embedding similarity, in document order, in one call.

    `budget` caps the excerpts' tokens (0: as many as the window holds); `order="relevance"` puts the best chunk
    last, next to the question, where a small model reads best (Liu et al., "Lost in the Middle", TACL 2024).
    """

    name: ClassVar[str] = "rag"
    summarizes: ClassVar[bool] = False
    chunk_tokens: int = CHUNK_TOKENS
    budget: int = 0
    order: str = "document"

    def __post_init__(self) -> None:
        if self.order not in ("document", "relevance"):
            raise ValueError(f"order must be document or relevance, got {self.order!r}")
        if self.budget < 0:
            raise ValueError(f"budget must be 0 (the window) or a number of tokens, got {self.budget}")

    @property
    def spec(self) -> str:
        options = [f"chunk_tokens={self.chunk_tokens}"] if self.chunk_tokens != CHUNK_TOKENS else []
        options += [f"budget={self.budget}"] if self.budget else []
        options += [f"order={self.order}"] if self.order != "document" else []
        return f"{self.name}:{','.join(options)}" if options else self.name

    def select(self, ctx: ReadingContext, reader: DirectReader, question: str | None) -> Selection:
        assert question is not None
        chosen, total = best_chunks(ctx, reader, question, self.chunk_tokens, self.budget, self.order)
        return Selection(
            excerpts_text(ctx, chosen), [Citation(c.index, c.start, c.end) for c in chosen], total,
            extras={"retrieved": [c.index for c in chosen]},
        )
