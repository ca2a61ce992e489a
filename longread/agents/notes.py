"""The communication unit (CU) that workers pass along the chain."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CommunicationUnit:
    """Notes written so far, and the segments whose text they drew evidence from."""

    text: str = ""
    evidence: tuple[int, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"text": self.text, "evidence": list(self.evidence)}

    @classmethod
    def from_dict(cls, data: dict) -> "CommunicationUnit":
        return cls(data.get("text", ""), tuple(data.get("evidence", ())))


# -- evidence notes ----------------------------------------------------------------------------------------------------
# A chain in evidence mode keeps its notes as items, one per part that gave evidence: "(part k) answer + quote".
# The worker writes only what its own part says (a small model extracts far more reliably than it rewrites a
# growing text), code appends it, and a reply whose words are not in the part it read (an invented answer) is
# dropped. Written by hand: no library grounds a reply in its source this cheaply.
import re  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
SHINGLE = 6  # words in a row that must appear in the part for a reply to count as grounded in it
ITEM_PREFIX = "(part {number}) "
_ITEM = re.compile(r"^\(part (\d+)\) ", re.M)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def grounded(reply: str, source: str, question: str = "") -> bool:
    """Whether a reply rests on the source: SHINGLE words in a row appear in it, or (a short reply) a word of at
    least five letters or digits that the question does not contain appears in it."""
    said, text = _words(reply), _words(source)
    if len(said) >= SHINGLE:
        shingles = {tuple(text[i : i + SHINGLE]) for i in range(len(text) - SHINGLE + 1)}
        if any(tuple(said[i : i + SHINGLE]) in shingles for i in range(len(said) - SHINGLE + 1)):
            return True
    asked, seen = set(_words(question)), set(text)
    return any(len(w) >= 5 and w not in asked and w in seen for w in said)


_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "").rstrip(".") for n in _NUMBER.findall(text)}


def unsupported_numbers(reply: str, source: str, question: str = "") -> list[str]:
    """The numbers of a reply that neither the source nor the question holds: a small model that cannot find a
    figure writes a plausible one, and a figure is the one kind of answer that code can check against the text
    (words can be paraphrased; digits are not). `7,465` and `7465` are the same number."""
    known = _numbers(source) | _numbers(question)
    return sorted(n for n in _numbers(reply) if n not in known)


def evidence_items(notes: str) -> list[tuple[int, str]]:
    """(part number, item text) of evidence notes, in order."""
    marks = list(_ITEM.finditer(notes))
    items = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(notes)
        items.append((int(mark.group(1)), notes[mark.start() : end].strip()))
    return items


def add_evidence(previous: CommunicationUnit, segment_index: int, reply: str, fits: Callable[[str], bool],
                 rank: Callable[[Sequence[str]], Sequence[float]] | None = None) -> CommunicationUnit:
    """The notes with a new item for segment `segment_index`; when they no longer fit (`fits`), the least relevant
    items (by `rank`, else the oldest) go first. Items stay in document order."""
    item = ITEM_PREFIX.format(number=segment_index + 1) + " ".join(reply.split())
    items = evidence_items(previous.text) + [(segment_index + 1, item)]
    order = list(range(len(items)))
    if rank is not None and len(items) > 1:
        scores = list(rank([text for _, text in items]))
        order.sort(key=lambda i: -scores[i])
    else:
        order.reverse()  # newest first
    kept: list[int] = []
    for i in order:
        trial = sorted([*kept, i], key=lambda j: items[j][0])
        if fits("\n".join(items[j][1] for j in trial)):
            kept = trial
    text = "\n".join(items[j][1] for j in kept)
    return CommunicationUnit(text, tuple(sorted({items[j][0] - 1 for j in kept})))
