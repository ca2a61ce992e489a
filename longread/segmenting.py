"""Token-budgeted segments of a document, on paragraph, then sentence, then line boundaries, with char spans.

Every segment holds at most `budget` tokens of the model's own tokenizer, and `Segment.tokens` is that exact count.
Paragraphs (split at blank lines) are kept whole when they fit; a paragraph over budget is split into sentences,
a sentence over budget into lines (verse, lists), and a line over budget at token boundaries. Consecutive units are
packed greedily, except that the pieces of a split paragraph (or sentence, line) start a new segment, so segments
end at paragraph breaks wherever they can. Whitespace around units stays in the gaps between segments, except
that a segment may keep the line breaks that follow it (see "exact counts" below).

Written by hand because the splitters we know (LangChain's, LlamaIndex's, semchunk) do not report exact char spans,
do not guarantee a hard budget in the model's own tokenizer, or count the same text many times (slow on a book).

Exact counts, fast. The whole text is encoded once (in parallel pieces with 4+ cores); token offsets give the count of
any span of it. That is only an estimate for the span as a text of its own: BPE tokenizers re-tokenize a substring
differently at its edges. For the tiktoken encodings whose pre-tokenizer we checked (o200k_base, cl100k_base) it
is exact when both edges sit where the pre-tokenizer always splits in the same way (`_exact_start`, `_exact_end`);
segments are cut there when the units allow it (after paragraphs and hard-wrapped lines, almost always). Any other
segment is counted once more, in a batch, and packed again in the rare case the count went over budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .tokenizers import TiktokenTokenizer, Tokenizer


@dataclass(frozen=True)
class Segment:
    index: int  # 0-based
    text: str  # == source_text[start:end]
    start: int  # char offset in the document text, inclusive
    end: int  # exclusive
    tokens: int  # tokenizer.count(text)


# Unit boundaries, coarse to fine. Every break matches only whitespace (or nothing), so no visible text falls in a
# gap. Possessive quantifiers and the look-behinds keep each whitespace run scanned once (no quadratic backtracking).
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*+\n\s*+")  # a blank line
_END = r"[.!?…。！？]"
_CLOSE = r"[\"'”’»)\]」』）]"
_SENTENCE_BREAK = re.compile(
    # . ! ? … then up to two closing quotes or brackets, then whitespace. Abbreviations ("Mr. Smith") make extra
    # breaks; they cost nothing, since a break is only a place where a segment may end.
    rf"(?:(?<={_END})|(?<={_END}{_CLOSE})|(?<={_END}{_CLOSE}{_CLOSE}))\s++"
    # CJK full stops take no space after them
    rf"|(?:(?<=[。！？])|(?<=[。！？]{_CLOSE}))(?=[^\s\"'”’»)\]」』）])"
    # a line that opens dialogue
    r"|(?<![^\S\n])[^\S\n]*+\n\s*+(?=[“\"‘«—–-])"
)
_LINE_BREAK = re.compile(r"(?<![^\S\n])[^\S\n]*+\n\s*+")
_BREAKS = (_PARAGRAPH_BREAK, _SENTENCE_BREAK, _LINE_BREAK)
_TOKEN_CUTS = len(_BREAKS)  # the finest level
_NON_SPACE = re.compile(r"\S")

# Budget slack for a segment whose count is estimated from offsets, since its edges re-tokenize alone (" Word"
# inside the text, "Word" at a segment's start). Such a segment is counted exactly before it is accepted.
_EDGE_SLACK = 3

# The tiktoken encodings whose pre-tokenizer patterns the reasoning in `_exact_start` / `_exact_end` was checked
# against; any other tokenizer takes the exact-count path. tiktoken has no public accessor for an encoding's pattern,
# so the name is the key, and tests/test_segmenting.py checks the patterns behind these names (sha1s below) against
# the installed tiktoken: an upgrade that changed one fails there, not silently here.
CHECKED_ENCODINGS = frozenset({"o200k_base", "cl100k_base"})
CHECKED_PATTERN_SHA1 = {"o200k_base": "958b3ed6a0032227aae6a29fb846625290c320a6",
                        "cl100k_base": "69af969f64b7cc05c220c98e1f8a86de7f0206dd"}


def segment_text(text: str, tokenizer: Tokenizer, budget: int) -> list[Segment]:
    """Split text into consecutive segments of at most `budget` tokens; see the module docstring.

    Raises ValueError if budget < 1, or if one character alone takes more than `budget` tokens (an emoji can
    take four byte tokens), since no segment could hold it.
    """
    if budget < 1:
        raise ValueError(f"segment budget must be at least 1 token, got {budget}")
    if not text or text.isspace():
        return []
    spans = _Segmenter(text, tokenizer, int(budget)).run()
    return [Segment(i, text[a:b], a, b, n) for i, (a, b, n) in enumerate(spans)]


def segment_document(document: Any, tokenizer: Tokenizer, budget: int) -> list[Segment]:
    """segment_text over any object with a `.text` (a longread Document)."""
    return segment_text(document.text, tokenizer, budget)


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    level: int  # index into _BREAKS of the split that made it; _TOKEN_CUTS for a token cut
    tokens: int  # an estimate, or the exact count of text[start:end] when `exact`
    exact: bool
    opens: bool = False  # first piece of a split paragraph (or sentence, line): starts a new segment


@dataclass(frozen=True)
class _Group:
    first: int  # unit indexes, inclusive
    last: int
    start: int
    end: int
    tokens: int
    exact: bool


class _Segmenter:
    def __init__(self, text: str, tokenizer: Tokenizer, budget: int):
        self.text, self.tokenizer, self.budget = text, tokenizer, budget
        token_starts = getattr(tokenizer, "token_starts", None)
        # Char offset where each token of the whole text starts; without it units are counted one by one.
        self.starts: np.ndarray | None = None
        if token_starts is not None:
            self.starts = np.maximum.accumulate(np.asarray(token_starts(text), dtype=np.int64))
        self._index: dict[int, int] = {}  # position -> tokens starting before it, filled in batches
        self.split_stable = (
            self.starts is not None
            and isinstance(tokenizer, TiktokenTokenizer)
            and tokenizer.name in CHECKED_ENCODINGS
        )

    def run(self) -> list[tuple[int, int, int]]:
        return self._pack(self._units(0, len(self.text), 0))

    # -- counts --------------------------------------------------------------------------------------------

    def _tokens_between(self, a: int, b: int) -> int:
        """Tokens of the whole-text encoding that start in [a, b)."""
        for p in (a, b):
            if p not in self._index:
                self._remember([p])
        return self._index[b] - self._index[a]

    def _remember(self, positions: list[int]) -> None:
        # one numpy call for many positions: a call per lookup would cost more than the lookups
        found = np.searchsorted(self.starts, np.asarray(positions, dtype=np.int64))  # type: ignore[arg-type]
        self._index.update(zip(positions, found.tolist()))

    def _estimates(self, spans: list[tuple[int, int]]) -> list[int]:
        if self.starts is None:
            return _count_many(self.tokenizer, [self.text[a:b] for a, b in spans])
        at = np.searchsorted(self.starts, np.asarray(spans, dtype=np.int64).reshape(-1)).reshape(-1, 2)
        return (at[:, 1] - at[:, 0]).tolist()

    def _exact_start(self, p: int) -> bool:
        """Whether encoding text[p:] alone gives the whole text's tokens from p on.

        True at 0, and for a checked encoding right after a line break that a visible character other than "/"
        follows: every match of the pre-tokenizer (o200k_base, cl100k_base) that holds the newline ends there
        (a run of whitespace ending in a newline, or punctuation + newlines, which also take "/" in o200k), and
        no pattern looks behind, so matching from p goes the same alone.
        """
        if p == 0:
            return True
        text = self.text
        return self.split_stable and text[p - 1] == "\n" and text[p] != "/" and not text[p].isspace()

    def _exact_end(self, p: int) -> bool:
        """Whether encoding text[:p] alone gives the whole text's tokens before p.

        True at the end of the text; where `_exact_start` holds (the match ending there is the same in text[:p],
        o200k's `\\s*[\\r\\n]+` or cl100k's `\\s++$` taking the whole run); and between a visible character and a
        space or tab, where every pattern stops at the space as it does at the end of a text. Matches are the
        same, so BPE, which runs within each match, gives the same tokens. (str.isspace covers the regex `\\s`.)
        """
        if p == len(self.text):
            return True
        if not self.split_stable:
            return False
        return self._exact_start(p) or (self.text[p] in " \t" and not self.text[p - 1].isspace())

    # -- units ---------------------------------------------------------------------------------------------

    def _units(self, start: int, end: int, level: int) -> list[_Unit]:
        """Units of text[start:end], split at `level` and finer until each is estimated within budget."""
        if level == _TOKEN_CUTS:
            return self._token_cuts(start, end)
        spans = _split(self.text, start, end, _BREAKS[level])
        if len(spans) == 1 and level > 0:  # nothing to split at this level
            return self._units(start, end, level + 1)
        units: list[_Unit] = []
        for (a, b), n in zip(spans, self._estimates(spans)):
            if n <= self.budget:
                units.append(_Unit(a, b, level, n, exact=self.starts is None))
            else:
                finer = self._units(a, b, level + 1)
                units.append(replace(finer[0], opens=True))
                units.extend(finer[1:])
        return units

    def _token_cuts(self, start: int, end: int) -> list[_Unit]:
        """One over-long line in pieces that fit, each cut at a token boundary and counted exactly."""
        text, budget, count = self.text, self.budget, self.tokenizer.count
        pieces = []
        while start < end:
            # Look at a window a little over budget, not the whole (maybe huge) rest of the line.
            stop = min(end, start + 8 * budget + 64)
            n = count(text[start:stop])
            while n <= budget and stop < end:
                stop = min(end, start + 2 * (stop - start))
                n = count(text[start:stop])
            if n <= budget:
                pieces.append(_Unit(start, end, _TOKEN_CUTS, n, exact=True))
                break
            cut, n = self._fitting_prefix(start, stop)
            pieces.append(_Unit(start, cut, _TOKEN_CUTS, n, exact=True))
            start = _NON_SPACE.search(text, cut, end).start()  # type: ignore[union-attr]
        return pieces

    def _fitting_prefix(self, start: int, stop: int) -> tuple[int, int]:
        """The end and exact count of a long prefix of text[start:stop] (which is over budget) that fits.

        Cut where a token of text[start:stop] starts, about `budget` tokens in, moved back to a word boundary if
        one is among the last eighth; the piece re-tokenizes alone, so count it and shrink by the overshoot.
        """
        text, budget, count = self.text, self.budget, self.tokenizer.count
        token_starts = getattr(self.tokenizer, "token_starts", None)
        cuts: list[int] = []
        if token_starts is not None:
            offsets = np.unique(np.asarray(token_starts(text[start:stop]), dtype=np.int64)) + start
            cuts = offsets[offsets > start].tolist()
        k = min(budget, len(cuts)) - 1
        while k >= 0:
            for j in range(k, max(-1, k - budget // 8 - 1), -1):
                if text[cuts[j] - 1].isspace() or text[cuts[j]].isspace():
                    k = j
                    break
            piece_end = _rstrip(text, start, cuts[k])
            if piece_end > start:
                n = count(text[start:piece_end])
                if n <= budget:
                    return piece_end, n
                k -= max(1, n - budget)
            else:
                k -= 1
        # No offsets, or no token cut fits: binary search on characters (counts grow with length, roughly).
        good, bad = start, stop
        while bad - good > 1:
            mid = (good + bad) // 2
            if count(text[start:mid]) <= budget:
                good = mid
            else:
                bad = mid
        good = _rstrip(text, start, good)
        while good > start and count(text[start:good]) > budget:
            good = _rstrip(text, start, good - 1)
        if good > start:
            return good, count(text[start:good])
        n = count(text[start])
        if n > budget:
            raise ValueError(
                f"segment budget of {budget} tokens cannot hold the character {text[start]!r} at offset {start}: "
                f"it takes {n} tokens"
            )
        return start + 1, n

    # -- packing -------------------------------------------------------------------------------------------

    def _end_after(self, unit: _Unit) -> tuple[int, bool]:
        """Where a segment that ends with `unit` ends, and whether its count there is exact from offsets."""
        if self._exact_end(unit.end):
            return unit.end, True
        following = _NON_SPACE.search(self.text, unit.end)
        if following is None:  # keep the text's trailing whitespace when that makes the count exact
            return (len(self.text), True) if self.split_stable else (unit.end, False)
        if self._exact_start(following.start()):  # keep the line breaks up to the next unit
            return following.start(), True
        return unit.end, False

    def _groups(self, units: list[_Unit]) -> list[_Group]:
        """Greedy runs of consecutive units whose (estimated) count fits the budget."""
        if self.starts is not None:
            self._remember([u.start for u in units] + [u.end for u in units] + [len(self.text)])
        groups: list[_Group] = []
        i = 0
        while i < len(units):
            start = units[i].start
            exact_start = self._exact_start(start)
            chosen: _Group | None = None
            joined = -1
            for j in range(i, len(units)):
                if j > i and units[j].opens:  # cut at the paragraph break rather than inside the paragraph
                    break
                if j == i and units[i].exact:  # counted alone: exactly this text
                    end, tokens, exact = units[i].end, units[i].tokens, True
                    joined = tokens
                elif self.starts is None:  # separate counts plus a token per join for the whitespace
                    joined += units[j].tokens + 1
                    end, tokens, exact = units[j].end, joined, False
                else:
                    end, exact_end = self._end_after(units[j])
                    tokens, exact = self._tokens_between(start, end), exact_start and exact_end
                    if tokens > self.budget and end != units[j].end:  # the kept line breaks tip it over
                        end = units[j].end
                        tokens, exact = self._tokens_between(start, end), exact_start and self._exact_end(end)
                if chosen is not None and tokens + (0 if exact else _EDGE_SLACK) > self.budget:
                    break
                chosen = _Group(i, j, start, end, tokens, exact)
            assert chosen is not None
            groups.append(chosen)
            i = chosen.last + 1
        return groups

    def _pack(self, units: list[_Unit]) -> list[tuple[int, int, int]]:
        """Segments (start, end, exact tokens) over `units`, each verified within budget."""
        groups = self._groups(units)
        unsure = [g for g in groups if not g.exact]
        counted = _count_many(self.tokenizer, [self.text[g.start : g.end] for g in unsure])
        counts = dict(zip((g.start for g in unsure), counted))
        spans: list[tuple[int, int, int]] = []
        for g in groups:
            tokens = g.tokens if g.exact else counts[g.start]
            if tokens <= self.budget:
                spans.append((g.start, g.end, tokens))
            elif g.last > g.first:  # the join cost more than estimated: the last unit goes to the next segment
                spans.extend(self._pack(units[g.first : g.last]))
                spans.extend(self._pack(units[g.last : g.last + 1]))
            else:  # a single unit estimated low: split it finer
                unit = units[g.first]  # (never a token cut: those are counted exactly)
                spans.extend(self._pack(self._units(unit.start, unit.end, min(unit.level + 1, _TOKEN_CUTS))))
        return spans


def _split(text: str, start: int, end: int, breaks: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of text[start:end] between matches of `breaks`, trimmed of whitespace, empty ones dropped."""
    spans = []
    a = _lstrip(text, start, end)
    for match in breaks.finditer(text, a, end):
        b = _rstrip(text, a, match.start())
        if b > a:
            spans.append((a, b))
        a = _lstrip(text, max(a, match.end()), end)
    b = _rstrip(text, a, end)
    if b > a:
        spans.append((a, b))
    return spans


def _lstrip(text: str, a: int, b: int) -> int:
    while a < b and text[a].isspace():
        a += 1
    return a


def _rstrip(text: str, a: int, b: int) -> int:
    while b > a and text[b - 1].isspace():
        b -= 1
    return b


def _count_many(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    batch = getattr(tokenizer, "encode_batch", None)
    if batch is not None and len(texts) > 1:
        return [len(ids) for ids in batch(texts)]
    return [tokenizer.count(t) for t in texts]
