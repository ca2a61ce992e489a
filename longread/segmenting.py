"""Token-budgeted segments on paragraph, then sentence boundaries, each with its char span in the source.

Written by hand because the text splitters we know (LangChain's, LlamaIndex's) do not report exact char spans,
do not guarantee a hard token budget with the model's own tokenizer, or re-count text many times (slow on a book).
Here the whole text is encoded once (in a few parallel pieces) and unit counts are read off the token offsets;
every packed segment is then verified once with an exact count (in a batch), and only a segment that fails
(BPE merges across a join can add a token) is split again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .tokenizers import Tokenizer

MIN_BUDGET = 8  # one character can take up to 4 byte-level tokens; below this a budget cannot always be met

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A sentence ends at . ! ? … (with closing quotes/brackets) followed by whitespace, or at a line break
# (verse, dialogue and lists keep one line per unit).
_END = "[.!?…。！？]"
_CLOSE = "[\"'”’)\\]]"
_SENTENCE_BREAK = re.compile(rf"(?:(?<={_END})|(?<={_END}{_CLOSE})|(?<={_END}{_CLOSE}{_CLOSE}))\s+|\n\s*")
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Segment:
    index: int  # 0-based
    text: str  # == source_text[start:end]
    start: int  # char offset in the document text, inclusive
    end: int  # exclusive
    tokens: int  # tokenizer.count(text)


def _trimmed_spans(text: str, lo: int, hi: int, breaks: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of text[lo:hi] between matches of breaks, with surrounding whitespace left in the gaps."""
    spans = []
    start = lo
    for match in breaks.finditer(text, lo, hi):
        spans.append((start, match.start() if match.start() > start else match.end()))
        start = match.end()
    spans.append((start, hi))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            out.append((a, b))
    return out


def _count_many(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    batch = getattr(tokenizer, "encode_batch", None)
    if batch is not None and len(texts) > 1:
        return [len(ids) for ids in batch(list(texts))]
    return [tokenizer.count(t) for t in texts]


def _cut_long(text: str, lo: int, hi: int, tokenizer: Tokenizer, budget: int) -> list[tuple[int, int]]:
    """Pieces of one over-long sentence, each within budget: the longest fitting prefix, cut at whitespace if any."""
    pieces = []
    while lo < hi:
        if tokenizer.count(text[lo:hi]) <= budget:
            pieces.append((lo, hi))
            break
        # Binary search the longest prefix that fits (token counts grow with length, up to BPE noise).
        good, bad = lo + 1, hi
        while bad - good > 1:
            mid = (good + bad) // 2
            if tokenizer.count(text[lo:mid]) <= budget:
                good = mid
            else:
                bad = mid
        cut = good
        space = max((m.start() for m in _WHITESPACE.finditer(text, lo + (good - lo) * 4 // 5, good)), default=-1)
        if space > lo:
            cut = space
        a, b = lo, cut
        while b > a and text[b - 1].isspace():
            b -= 1
        pieces.append((a, b))
        lo = cut
        while lo < hi and text[lo].isspace():
            lo += 1
    return pieces


class _Counter:
    """Token counts of spans of one text: estimated from one encoding of the whole text where the tokenizer gives
    token offsets (`token_starts`), else exact per span. Estimates are verified before a segment is accepted."""

    def __init__(self, text: str, tokenizer: Tokenizer):
        self.text, self.tokenizer = text, tokenizer
        starts = getattr(tokenizer, "token_starts", None)
        self.starts = starts(text) if starts is not None and text else None

    def estimate_many(self, spans: Sequence[tuple[int, int]]) -> list[int]:
        if self.starts is None:
            return _count_many(self.tokenizer, [self.text[a:b] for a, b in spans])
        flat = np.asarray(spans, dtype=np.int64).reshape(-1)
        at = np.searchsorted(self.starts, flat, side="left").reshape(-1, 2)
        # A span holds at least one token even when its first token began in the whitespace before it.
        return [max(int(n), 1) for n in (at[:, 1] - at[:, 0])]


def _units(text: str, counter: _Counter, budget: int) -> list[tuple[int, int, int]]:
    """(start, end, estimated tokens) of paragraphs, or of sentences / token cuts of paragraphs over budget."""
    tokenizer = counter.tokenizer
    paragraphs = _trimmed_spans(text, 0, len(text), _PARAGRAPH_BREAK)
    units: list[tuple[int, int, int]] = []
    for (a, b), n in zip(paragraphs, counter.estimate_many(paragraphs)):
        if n <= budget:
            units.append((a, b, n))
            continue
        sentences = _trimmed_spans(text, a, b, _SENTENCE_BREAK)
        for (sa, sb), sn in zip(sentences, counter.estimate_many(sentences)):
            if sn <= budget and (counter.starts is None or tokenizer.count(text[sa:sb]) <= budget):
                units.append((sa, sb, sn))
            else:
                for pa, pb in _cut_long(text, sa, sb, tokenizer, budget):
                    units.append((pa, pb, tokenizer.count(text[pa:pb])))
    return units


def _pack(units: Sequence[tuple[int, int, int]], budget: int) -> list[list[int]]:
    """Greedy groups of consecutive unit indexes whose estimated joined count fits the budget.

    The estimate adds one token per join for the whitespace between units (it often merges into a neighbour).
    """
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, (_, _, n) in enumerate(units):
        extra = n + (1 if current else 0)
        if current and total + extra > budget:
            groups.append(current)
            current, total = [], 0
            extra = n
        current.append(i)
        total += extra
    if current:
        groups.append(current)
    return groups


def segment_text(text: str, tokenizer: Tokenizer, budget: int) -> list[Segment]:
    """Segments of at most `budget` tokens covering text in order (only whitespace falls between them)."""
    if budget < MIN_BUDGET:
        raise ValueError(f"a segment budget must be at least {MIN_BUDGET} tokens, got {budget}")
    units = _units(text, _Counter(text, tokenizer), budget)
    if not units:
        return []
    pending = _pack(units, budget)
    spans: list[tuple[int, int, int]] = []
    while pending:
        texts = [text[units[g[0]][0] : units[g[-1]][1]] for g in pending]
        retry: list[list[int]] = []
        for group, n in zip(pending, _count_many(tokenizer, texts)):
            if n <= budget or len(group) == 1:  # a single unit was counted alone and fits
                spans.append((units[group[0]][0], units[group[-1]][1], n))
            else:  # rare: the join cost more than estimated; split the group in two and verify again
                half = len(group) // 2
                retry.extend([group[:half], group[half:]])
        pending = retry
    spans.sort()
    return [Segment(i, text[a:b], a, b, n) for i, (a, b, n) in enumerate(spans)]


def segment_document(document: Any, tokenizer: Tokenizer, budget: int) -> list[Segment]:
    """segment_text over any object with a `.text` (a longread Document)."""
    return segment_text(document.text, tokenizer, budget)
