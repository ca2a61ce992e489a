"""Before the manager writes: verified claims ranked for the question, and conflicts between them resolved in the
open (LLM x MapReduce's conflict resolution, with the deciding evidence computed by code).

- The question's *specifics* are its names and numbers (its content words when it has neither). A claim matches
  the question as far as its source sentences hold them: a distractor's sentence names another station, so it
  matches less than the true one.
- Two claims *conflict* when they address the same part of the question (most of their question words are
  shared) but say different new things (another number, name or word). Of a conflicting pair, the claim whose
  sources match the question better is kept and the other set aside, with the reason; a tie is kept both ways and
  shown to the manager side by side, to decide from the sources.
- Every decision is recorded (`Resolution.set_aside`, `conflicts`) for the trace.
- An aggregate question (list every ..., how many ... there were) has no rivals: its claims are the items of one
  answer, every one kept in document order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .. import grounding
from .claims import Claim
from .questions import aggregate_question

CONFLICT_OVERLAP = 0.5  # the share of question words two claims must share to be about the same thing


def question_specifics(question: str) -> set[str]:
    found = grounding.entities(question)
    return found or set(grounding.content_words(question))


def match(claim: Claim, question: str) -> float:
    """The share of the question's specifics that the claim's source sentences (or, unchecked, its text) hold."""
    wanted = question_specifics(question)
    if not wanted:
        return 1.0
    held = grounding.fold(claim.source or claim.text).text
    return sum(grounding.present(" ".join(grounding.fold(w).text.split()), held) for w in wanted) / len(wanted)


def missing(claim: Claim, question: str) -> list[str]:
    """The question's names and numbers that the claim's sources do not hold (shown beside it)."""
    held = grounding.fold(claim.source or claim.text).text
    return sorted(w for w in grounding.entities(question) if not grounding.present(grounding.fold(w).text, held))


def _asked(claim: Claim, question_stems: set[str]) -> set[str]:
    return {grounding.stem(w) for w in grounding.content_words(claim.text)} & question_stems


def _said(claim: Claim, question_stems: set[str]) -> set[str]:
    return {grounding.stem(w) for w in grounding.content_words(claim.text)} - question_stems


def conflicting(a: Claim, b: Claim, question: str) -> bool:
    """Whether two claims answer the same part of the question differently."""
    q = grounding.stems(question)
    qa, qb = _asked(a, q), _asked(b, q)
    if not qa or not qb or len(qa & qb) < CONFLICT_OVERLAP * len(qa | qb):
        return False
    na, nb = _said(a, q), _said(b, q)
    if not na or not nb or na <= nb or nb <= na:
        return False  # one says more of the same, not something else
    # different specifics (numbers, names, rare words) on each side
    sa = grounding.entities(a.text) - grounding.entities(question)
    sb = grounding.entities(b.text) - grounding.entities(question)
    return bool(sa ^ sb) or bool(na ^ nb)


@dataclass
class Resolution:
    claims: list[Claim]  # for the manager, best first
    set_aside: list[tuple[Claim, str]] = field(default_factory=list)
    conflicts: list[tuple[int, int]] = field(default_factory=list)  # indices into `claims` still in conflict
    notes: dict[int, str] = field(default_factory=dict)  # index into `claims` -> what its sources lack

    def trace(self) -> dict:
        return {
            "set_aside": [{"claim": c.text, "parts": [p + 1 for p in c.cited_parts], "reason": why}
                          for c, why in self.set_aside],
            "conflicts": [[self.claims[i].text, self.claims[j].text] for i, j in self.conflicts],
        }


def resolve(claims: Sequence[Claim], question: str) -> Resolution:
    """Rank by match with the question (then document order), set aside the losers of clear conflicts. An
    aggregate question's claims are items of one answer, not rivals: all are kept, in document order."""
    if aggregate_question(question):
        ordered = sorted(claims, key=lambda c: (c.part, c.spans[:1]))
        notes = {i: ", ".join(lacks) for i, c in enumerate(ordered) if (lacks := missing(c, question))}
        return Resolution(ordered, notes=notes)
    scored = sorted(((match(c, question), c) for c in claims), key=lambda sc: (-sc[0], sc[1].part))
    kept: list[tuple[float, Claim]] = []
    set_aside: list[tuple[Claim, str]] = []
    for score, claim in scored:
        beaten = next(((s, k) for s, k in kept if s > score and conflicting(claim, k, question)), None)
        if beaten is not None:
            lacks = missing(claim, question)
            why = (f"conflicts with \"{beaten[1].text[:80]}\" (part {beaten[1].part + 1}), whose source matches the "
                   "question better" + (f"; its own source does not name {', '.join(lacks)}" if lacks else ""))
            set_aside.append((claim, why))
            continue
        kept.append((score, claim))
    ranked = [c for _, c in kept]
    conflicts = [(i, j) for i in range(len(ranked)) for j in range(i + 1, len(ranked))
                 if conflicting(ranked[i], ranked[j], question)]
    notes = {i: ", ".join(lacks) for i, c in enumerate(ranked) if (lacks := missing(c, question))}
    return Resolution(ranked, set_aside, conflicts, notes)
