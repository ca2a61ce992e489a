"""Grounded claims: what a worker says its part holds, each with the verbatim quotes that support it, checked by
code before anything travels (LLM x MapReduce's structured information protocol: Zhou et al., "LLM×MapReduce:
Simplified Long-Sequence Processing using Large Language Models", 2024; made checkable here).

A worker replies in a line format (or JSON, which the parser reads too):

    Claim: Kelo Brandu always left a parcel in locker number 4471.
    Quote: "Kelo Brandu always left a parcel in locker number 4471"

or `Claim: none`. `parse_claims` reads the reply; `check_claim` keeps a claim only when

1. each quote occurs in the part (grounding.find_quote: tolerant of case, quote marks, whitespace, hyphenation,
   small OCR-like slips; never of another number), and at least one does;
2. every number of the claim is in the source sentences of its quotes (or in the claims it builds on);
3. every name of the claim is in those sentences (or the few lines around them, where "she" was named) or the
   claims it builds on: a name the question gave does not count, so an answer written over an unrelated
   sentence ("the town where Kelo was born is Paris") and a distractor's sentence claimed for the question's
   station both fail;
4. the claim says something new (words beyond the question), and at least half of that is in its sources.

A claim that fails may still be kept as what the text says: its quoted sentence (`restated`), the sentences it
copies from the part (`copied`), or the one sentence code finds for it (`located`). A claim that fails is dropped
with its reason (the trace shows it); the kept ones carry their spans in the
document, so citations point at the sentence, not the whole part.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

from .. import grounding
from .replies import found_nothing

NONE_MARKERS = ("none", "nothing", "no claims", "nothing relevant", "n/a", "no findings")


@dataclass(frozen=True)
class Claim:
    """One statement about the document. `part` is the segment it was read in; `spans` the document's character
    spans of the sentences its quotes lie in (set when checked), `source` the text of those sentences."""

    text: str
    quotes: tuple[str, ...] = ()
    part: int = 0
    spans: tuple[tuple[int, int], ...] = ()
    source: str = ""
    parts: tuple[int, ...] = ()  # every part that said it (duplicates merged)
    located: bool = False  # its quote was not in the part, but code found the sentence that supports it
    # "worker": as the worker wrote it; "restated": the worker's words went beyond its quote, so the claim is the
    # quoted sentence itself; "copied": the worker copied sentences of its part (its quote off or missing), so
    # the claim is the sentences found; "followed": a sentence found by following a name (bridges.py)
    origin: str = "worker"

    @property
    def cited_parts(self) -> tuple[int, ...]:
        return self.parts or (self.part,)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quotes"] = list(self.quotes)
        data["spans"] = [list(s) for s in self.spans]
        data["parts"] = list(self.parts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Claim":
        return cls(
            text=str(data.get("text", "")), quotes=tuple(data.get("quotes", ())), part=int(data.get("part", 0)),
            spans=tuple(tuple(s) for s in data.get("spans", ())),  # type: ignore[misc]
            source=str(data.get("source", "")), parts=tuple(data.get("parts", ())),
            located=bool(data.get("located", False)), origin=str(data.get("origin", "worker")),
        )


@dataclass(frozen=True)
class Dropped:
    """A claim that did not pass its check, and why (shown in traces, never passed on)."""

    claim: Claim
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim.to_dict(), "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Dropped":
        return cls(Claim.from_dict(data.get("claim", {})), str(data.get("reason", "")))


# -- parsing ------------------------------------------------------------------------------------------------------
_FIELD = re.compile(
    r"^\s*(?:[-*•]\s*|\d+[.)]\s*)?(?:\*\*|__)?\s*(claim|finding|answer|fact|event|quote|quotes|evidence|source)"
    r"\s*(?:\d+\s*)?(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?\s*(.*)$",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"[\"“]([^\"“”]{3,}?)[\"”]")
_CLAIM_KEYS = ("claim", "finding", "answer", "fact", "event")


def _strip_quote(text: str) -> str:
    text = text.strip().strip("*_").strip()
    if len(text) >= 2 and text[0] in "\"“'‘" and text[-1] in "\"”'’":
        text = text[1:-1]
    return text.strip()


def _is_none(text: str) -> bool:
    plain = text.strip().strip(".!*_\"' ").lower()
    return not plain or plain in NONE_MARKERS or found_nothing(text, "none")


def parse_claims(reply: str, part: int) -> list[Claim]:
    """The claims of a worker's reply (line format or JSON); [] for `Claim: none` or a reply with no claim."""
    text = reply.strip()
    if text.startswith("```"):
        text = re.sub(r"^```\w*\s*|\s*```$", "", text)
    if text[:1] in "[{":
        parsed = _parse_json(text, part)
        if parsed is not None:
            return parsed
    claims: list[Claim] = []
    current: list[str] | None = None  # [claim text, quotes...]

    def close() -> None:
        if current and not _is_none(current[0]):
            quotes = tuple(q for q in current[1:] if q)
            if not quotes:  # a quote written inline: Claim: ... ("words of the source")
                quotes = tuple(m.group(1).strip() for m in _QUOTED.finditer(current[0]))
            claims.append(Claim(_plain(current[0]), quotes, part))

    for line in text.splitlines():
        match = _FIELD.match(line)
        if match:
            key, value = match.group(1).lower(), match.group(2).strip()
            if key in _CLAIM_KEYS:
                close()
                current = [value]
            elif current is not None:
                current.extend(_strip_quote(q) for q in (_QUOTED.findall(value) or [value]))
        elif current is not None and line.strip():
            # a continuation: more quote text, or a wrapped claim
            if len(current) > 1:
                current[-1] = f"{current[-1]} {_strip_quote(line)}".strip()
            else:
                current[0] = f"{current[0]} {line.strip()}"
    close()
    return claims


def _plain(text: str) -> str:
    """A claim's text without the list number and markdown a small model puts around it ("1. **The tall man ...**"):
    "1" is no number the claim states."""
    return grounding.LIST_MARKER.sub("", text.strip().replace("**", "").replace("__", "")).strip()


def _parse_json(text: str, part: int) -> list[Claim] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict):
        data = data.get("claims", data.get("findings", [data]))
    if not isinstance(data, list):
        return None
    claims = []
    for item in data:
        if not isinstance(item, dict):
            continue
        said = next((str(item[k]) for k in ("claim", "finding", "answer", "fact", "event") if item.get(k)), "")
        quotes = item.get("quotes", item.get("quote", item.get("evidence", [])))
        if isinstance(quotes, str):
            quotes = [quotes]
        if said and not _is_none(said):
            claims.append(Claim(said.strip(), tuple(_strip_quote(str(q)) for q in quotes if str(q).strip()), part))
    return claims


# -- checking ------------------------------------------------------------------------------------------------------
@dataclass
class PartText:
    """A part of the document as the checks need it: its text, where it starts in the document, and its folding
    (computed once for every claim of the part)."""

    text: str
    start: int = 0
    _folded: grounding.Folded | None = field(default=None, repr=False)
    _sentences: list[tuple[int, int]] | None = field(default=None, repr=False)

    @property
    def folded(self) -> grounding.Folded:
        if self._folded is None:
            self._folded = grounding.fold(self.text)
        return self._folded

    @property
    def sentences(self) -> list[tuple[int, int]]:
        """The (start, end) spans of the part's sentences."""
        if self._sentences is None:
            self._sentences = grounding.sentence_spans(self.text)
        return self._sentences


MIN_NEW_SUPPORT = 0.5  # the share of a claim's new words that its sources must hold
NAME_CONTEXT_CHARS = 600  # how far before a quote's sentence a claim's names may come from (a pronoun's antecedent)
NAME_CONTEXT_AFTER = 200  # and how far after it


def check_claim(claim: Claim, part: PartText, question: str | None = None, known: str = "") -> Claim | Dropped:
    """The claim with its spans and source sentences when it passes every check (module docstring), else why not.
    `known`: text the claim may take names from besides its own sources (the claims it builds on).

    A claim whose quotes are missing or not in the part is not dropped yet: small models copy the format's
    wording or cut a quote short. Code then looks for the one sentence of the part that supports the claim by the
    same checks (every number and name, and half of what it says beyond the question); a claim so located is
    marked `located` in the trace. An invented claim has no such sentence."""
    question = question or ""
    spans = [hit for quote in claim.quotes if (hit := grounding.find_quote(quote, part.folded)) is not None]
    if spans:
        sentences = sorted({grounding.sentence_around(part.text, start, end) for start, end in spans})
        why = _unsupported(claim, part, sentences, question, known)
        if why is None:
            return _checked(claim, part, sentences)
        if why.startswith("name") or why.startswith("says nothing") or not question:
            restated = _restated(claim, part, sentences, question)
            if restated is not None:
                return restated
    else:
        short = all(len(grounding.words(q)) < grounding.MIN_QUOTE_WORDS for q in claim.quotes)
        why = ("no quote" if not claim.quotes else
               f"quote too short to check: \"{claim.quotes[0][:80]}\"" if short else
               f"quote not in part {claim.part + 1}: \"{claim.quotes[0][:80]}\"")
    copied = _copied(claim, part, question)
    if copied is not None:
        return copied
    located = _locate(claim, part, question, known)
    if located is not None:
        return replace(_checked(claim, part, [located]), located=True)
    return Dropped(claim, why)


def _copied(claim: Claim, part: PartText, question: str) -> Claim | None:
    """A claim that copies its part's sentences (what a small reader of a story often writes, with a quote that is
    off or none) is its own evidence: the sentences of it found in the part are kept, as the claim (`copied`), and
    what it says beyond them is dropped. A summary's only: every copied sentence is a fact of the story, where a
    question's claim must be about the question (`_restated`, `_locate`)."""
    if question:
        return None
    found = []
    for lo, hi in grounding.sentence_spans(claim.text):
        hit = grounding.find_quote(claim.text[lo:hi], part.folded)
        if hit is not None:
            found.append(grounding.sentence_around(part.text, *hit))
    if not found:
        return None
    checked = _checked(claim, part, sorted(set(found)))
    return replace(checked, text=checked.source, origin="copied")


RESTATE_RELEVANCE = 0.5  # the share of the question's words (names aside) a quoted sentence must hold to stand alone


def _restated(claim: Claim, part: PartText, sentences: Sequence[tuple[int, int]], question: str) -> Claim | None:
    """A claim that went beyond its quote (it took the question's names: "the brig that Trulboth sailed was built in
    1739" over "The Noldousby had been built at Belkelby in the year 1739.") is replaced by its quoted sentence
    itself, when that sentence holds what the claim added (its own numbers and names) or, the claim adding none,
    most of the question's words. The worker's inference is dropped; what the text says is kept."""
    source = " ".join(part.text[lo:hi].strip() for lo, hi in sentences)
    if not question:  # a summary's reader: the sentence it quoted is a fact of the story, its own words may not be
        return replace(_checked(claim, part, sentences), text=source, origin="restated")
    folded = grounding.fold(source).text
    asked = grounding.entities(question) | set(grounding.words(question))
    added = (grounding.quantities(claim.text) | grounding.names(claim.text)) - asked
    wanted = {grounding.stem(w) for w in grounding.content_words(question)} - grounding.names(question)
    shared = len(wanted & grounding.stems(source))
    if added:  # it must hold what the claim added, and be about the question ("Paris was far away" is not)
        if shared < min(2, len(wanted)) or not all(
                grounding.present(" ".join(grounding.fold(a).text.split()), folded) for a in added):
            return None
    elif not wanted or shared < RESTATE_RELEVANCE * len(wanted):
        return None
    return replace(_checked(claim, part, sentences), text=source, origin="restated")


def _checked(claim: Claim, part: PartText, sentences: Sequence[tuple[int, int]]) -> Claim:
    """The claim with the document spans and text of its sentences (leading whitespace trimmed)."""
    trimmed = [(lo + len(part.text[lo:hi]) - len(part.text[lo:hi].lstrip()), hi) for lo, hi in sentences]
    source = " ".join(dict.fromkeys(part.text[lo:hi].strip() for lo, hi in trimmed))
    doc_spans = tuple((part.start + lo, part.start + hi) for lo, hi in trimmed)
    return replace(claim, spans=doc_spans, source=source, parts=(claim.part,))


def _unsupported(claim: Claim, part: PartText, sentences: Sequence[tuple[int, int]], question: str, known: str
                 ) -> str | None:
    """Why the sentences do not support the claim (checks 2-4 of the module docstring), or None."""
    source = " ".join(part.text[lo:hi] for lo, hi in sentences)
    missing_numbers = sorted(grounding.quantities(claim.text) - grounding.quantities(source) -
                             grounding.quantities(known))
    if missing_numbers:
        return f"number {', '.join(missing_numbers)} not in its quote"
    # A name may also come from just around its sentence ("she saved the steamer" names Ada Varn two lines up), or
    # from the claims it builds on; never from the question alone: "the town where Kelo was born is Paris" must
    # have Kelo near its quote, or it is an answer written over an unrelated sentence.
    around = " ".join(part.text[max(0, lo - NAME_CONTEXT_CHARS) : hi + NAME_CONTEXT_AFTER] for lo, hi in sentences)
    allowed = grounding.fold(" ".join((around, known))).text
    missing_names = [n for n in sorted(grounding.names(claim.text)) if not grounding.present(n, allowed)]
    if missing_names:
        return f"name {', '.join(missing_names)} not in its quote"
    new = {grounding.stem(w) for w in grounding.content_words(claim.text)} - grounding.stems(question)
    if not new:
        return "says nothing the question does not"
    if len(new & grounding.stems(source)) < MIN_NEW_SUPPORT * len(new):
        return "its words are not in its quote"
    return None


LOCATE_MIN_WORDS = 3  # a claim without a name or number needs this many words of its own to pin a sentence down


def _locate(claim: Claim, part: PartText, question: str, known: str) -> tuple[int, int] | None:
    """The sentence of the part that supports the claim best (most of its new words), if one does. Only a claim
    specific enough to pin one sentence down is located: one with a name or a number, or LOCATE_MIN_WORDS words
    beyond the question ("fawn" alone would match any sentence that says fawn)."""
    new = {grounding.stem(w) for w in grounding.content_words(claim.text)} - grounding.stems(question)
    if not grounding.entities(claim.text) and len(new) < LOCATE_MIN_WORDS:
        return None
    best: tuple[int, tuple[int, int]] | None = None
    for span in part.sentences:
        held = len(new & grounding.stems(part.text[span[0] : span[1]]))
        if held < MIN_NEW_SUPPORT * len(new) or (best is not None and held <= best[0]):
            continue
        if _unsupported(claim, part, [span], question, known) is None:
            best = (held, span)
    return best[1] if best else None


def check_claims(claims: Iterable[Claim], part: PartText, question: str | None = None, known: str = ""
                 ) -> tuple[list[Claim], list[Dropped]]:
    kept: list[Claim] = []
    dropped: list[Dropped] = []
    for claim in claims:
        outcome = check_claim(claim, part, question, known)
        (dropped if isinstance(outcome, Dropped) else kept).append(outcome)  # type: ignore[arg-type]
    return kept, dropped


# -- the communication unit: verified claims ---------------------------------------------------------------------
def claim_key(claim: Claim) -> str:
    return " ".join(grounding.content_words(claim.text))


def merge_claims(existing: Sequence[Claim], new: Iterable[Claim]) -> list[Claim]:
    """The claims with the new ones added; a claim that says what a kept one says (the same content words, or the
    same source sentence and the same numbers) is merged into it (its part added), so nothing is passed twice."""
    out = list(existing)
    for claim in new:
        key = claim_key(claim)
        for i, kept in enumerate(out):
            same_source = claim.source and claim.source == kept.source
            if key == claim_key(kept) or (same_source and grounding.numbers(claim.text) == grounding.numbers(kept.text)):
                parts = tuple(sorted(set(kept.cited_parts) | set(claim.cited_parts)))
                spans = tuple(sorted(set(kept.spans) | set(claim.spans)))
                out[i] = replace(kept, parts=parts, spans=spans)
                break
        else:
            out.append(claim)
    return out


def render_claim(claim: Claim, number: int | None = None, *, source: bool = True) -> str:
    parts = ", ".join(str(p + 1) for p in claim.cited_parts)
    label = f"[{number}] " if number is not None else ""
    head = f"{label}(part {parts}) {claim.text.strip()}"
    if source and claim.source and claim.source.strip() != claim.text.strip():
        return f"{head}\n    Source: \"{claim.source}\""
    return head


def render_claims(claims: Sequence[Claim], *, numbered: bool = True, source: bool = True) -> str:
    return "\n".join(render_claim(c, i + 1 if numbered else None, source=source) for i, c in enumerate(claims))


def claims_to_dicts(claims: Iterable[Claim]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in claims]


def claims_from_dicts(data: Iterable[dict[str, Any]]) -> list[Claim]:
    return [Claim.from_dict(d) for d in data]


def ungrounded_answer(answer: str, text: str, question: str) -> str | None:
    """Why a one-call answer (retrieval's) does not rest on its text, or None when it does or there is nothing to
    check. What the answer adds to the question (its numbers and names) must stand in one sentence of the text
    whose neighbourhood also names every name of the question: a distractor's sentence gives another station, a
    pair's second sentence gives the year without the sailor, and both send the question to the whole document."""
    asked = grounding.entities(question) | set(grounding.words(question))
    added = sorted((grounding.quantities(answer) | grounding.names(answer)) - asked)
    if not added:
        return None
    wanted = sorted(grounding.names(question))
    keys = [" ".join(grounding.fold(a).text.split()) for a in added]
    spans = grounding.sentence_spans(text)
    holding = [i for i, (lo, hi) in enumerate(spans) if all(grounding.present(k, grounding.fold(text[lo:hi]).text)
                                                               for k in keys)]
    if not holding:
        return f"its answer ({', '.join(added[:3])}) is in no sentence of its text"
    lacking: list[str] = wanted
    for i in holding:  # the sentence and the two before it ("she" was named there), not the next excerpt
        around = grounding.fold(text[spans[max(0, i - 2)][0] : spans[i][1]]).text
        missing = [n for n in wanted if not grounding.present(n, around)]
        if not missing:
            return None
        lacking = min(lacking, missing, key=len)
    return f"the sentence that gives {', '.join(added[:3])} does not name {', '.join(lacking)}"
