"""Following a name: the sentences elsewhere in the document that name what a checked claim introduced.

Chain-of-Agents lets a later worker see that its part matters because of an earlier finding ("Kelo was born in
Tharby" makes "Tharby is known for its festival of Zarn" relevant). A small worker often misses that link; code
does not: for the best claims of a question, every name the claim brings that the question does not (a bridge:
Tharby) is looked up in the whole document, and the sentences that name it go to the manager beside the claims,
as claims of their own (each one is its sentence, so it needs no check). Like ReadAgent's page lookup (Lee et al.,
ICML 2024), but by name, without a call.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Sequence

from .. import grounding
from .claims import Claim

MAX_CLAIMS = 3  # the best-ranked claims whose names are followed
MAX_NAMES = 3  # names followed per claim
MAX_SENTENCES = 2  # sentences shown per name (the first ones, in document order)
MAX_SENTENCE_CHARS = 400


@dataclass
class DocumentIndex:
    """A document's sentences, folded once, and where its parts start (to name a sentence's part)."""

    text: str
    part_starts: Sequence[int] = (0,)
    _sentences: list[tuple[int, int]] | None = field(default=None, repr=False)
    _folded: list[str] | None = field(default=None, repr=False)

    def sentences(self) -> tuple[list[tuple[int, int]], list[str]]:
        if self._sentences is None:
            self._sentences = grounding.sentence_spans(self.text)
            self._folded = [f" {grounding.fold(self.text[lo:hi]).text} " for lo, hi in self._sentences]
        return self._sentences, self._folded  # type: ignore[return-value]

    def naming(self, name: str) -> list[tuple[int, int]]:
        """Spans of the sentences that name `name` (folded), in document order."""
        key = f" {' '.join(grounding.fold(name).text.split())} "
        spans, folded = self.sentences()
        return [span for span, text in zip(spans, folded) if key in text]

    def part_of(self, start: int) -> int:
        return max(0, bisect.bisect_right(list(self.part_starts), start) - 1)


def bridges(claims: Sequence[Claim], question: str, index: DocumentIndex) -> list[Claim]:
    """Sentences naming the bridge names of the best claims, each once, not already a claim's source."""
    asked = grounding.entities(question) | set(grounding.words(question))
    seen_sources = {" ".join(grounding.words(c.source)) for c in claims}
    out: list[Claim] = []
    taken: set[tuple[int, int]] = set()
    for claim in claims[:MAX_CLAIMS]:
        names = [n for n in sorted(grounding.names(claim.text)) if n not in asked][:MAX_NAMES]
        for name in names:
            for lo, hi in index.naming(name)[:MAX_SENTENCES + 1]:
                sentence = index.text[lo:hi].strip()
                if (lo, hi) in taken or " ".join(grounding.words(sentence)) in seen_sources:
                    continue
                if len(sentence) > MAX_SENTENCE_CHARS or len([s for s in out if name in s.text.lower()]) >= MAX_SENTENCES:
                    continue
                taken.add((lo, hi))
                part = index.part_of(lo)
                out.append(Claim(sentence, (sentence,), part, ((lo, hi),), sentence, (part,)))
    return out
