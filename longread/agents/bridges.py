"""Following a name: the sentences elsewhere in the document that hold a rare name of the question, or name what a
checked claim introduced.

Chain-of-Agents lets a later worker see that its part matters because of an earlier finding ("Kelo was born in
Tharby" makes "Tharby is known for its festival of Zarn" relevant). A small worker often misses that link; code
does not: every name the best claims bring that the question does not (a bridge: Tharby) is looked up in the whole
document, and so is a name of the question that few sentences hold (an anchor); the sentences found go to the
manager as claims of their own (each one is its sentence, so it needs no check) and through the same ranking and
conflict resolution as the workers' claims. Like ReadAgent's page lookup (Lee et al., ICML 2024), but by name,
without a call; a name as common as the book's heroine is never an anchor.
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


RARE = 3  # a question's name that at most this many sentences hold is an anchor: all of them are read
MAX_FOLLOWED = 8  # sentences added in all


def bridges(claims: Sequence[Claim], question: str, index: DocumentIndex) -> list[Claim]:
    """Sentences found by following names, each once, none already a claim's source: the sentences that hold a
    rare name of the question (an anchor: "Trulboth Traemsta sailed aboard a brig called the Noldousby"), then the
    sentences that name what the best claims and the anchors introduce (Noldousby -> "The Noldousby had been built
    ... in the year 1739")."""
    asked = grounding.entities(question) | set(grounding.words(question))
    seen = {" ".join(grounding.words(c.source)) for c in claims}
    out: list[Claim] = []

    def add(span: tuple[int, int]) -> bool:
        sentence = index.text[span[0] : span[1]].strip()
        key = " ".join(grounding.words(sentence))
        if key in seen or len(sentence) > MAX_SENTENCE_CHARS or len(out) >= MAX_FOLLOWED:
            return False
        seen.add(key)
        part = index.part_of(span[0])
        out.append(Claim(sentence, (sentence,), part, (span,), sentence, (part,), origin="followed"))
        return True

    for name in sorted(grounding.names(question)):
        spans = index.naming(name)
        if 0 < len(spans) <= RARE:
            for span in spans:
                add(span)
    for seed in [*claims[:MAX_CLAIMS], *list(out)]:
        for name in [n for n in sorted(grounding.names(seed.text)) if n not in asked][:MAX_NAMES]:
            for span in index.naming(name)[:MAX_SENTENCES]:
                add(span)
    return out
