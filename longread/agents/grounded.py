"""The agents of the grounded chain: a worker whose reply becomes checked claims, and a manager that reads only
checked claims (ranked, conflicts settled: resolve.py), merges them in groups when they do not fit its window
(the collapse stage), and checks a summary's names and numbers against the document.

Prompts are the `*claims*` ones of prompts.py; the chain strategy puts them in place (workflows/chain.py), so the
window budgets (budget.py) count them like any other worker and manager prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .. import grounding
from ..backends.base import CallTag, ChatModel, Completion, Message, TextCallback
from ..backends.calls import Call, Steps, adrive, drive
from ..segmenting import Segment
from .budget import Budget
from .bridges import DocumentIndex, bridges
from .claims import (Claim, Dropped, PartText, check_claim, check_claims, merge_claims, parse_claims, render_claim,
                     render_claims)
from .messages import Mode, manager_messages, worker_messages, worker_prefix_chars
from .notes import CommunicationUnit
from .prompts import Prompts
from .questions import aggregate_question, items_asked
from .resolve import Resolution, resolve


@dataclass(frozen=True)
class ClaimStep:
    kept: list[Claim]
    dropped: list[Dropped]
    completion: Completion


@dataclass
class ClaimWorker:
    """(segment, the checked claims so far) -> this part's checked claims. `shared=False` is the map form: the
    earlier claims are not shown, so workers are independent (and can run at once)."""

    model: ChatModel
    prompts: Prompts
    mode: Mode
    question: str | None
    budget: Budget
    shared: bool = True
    rank: Callable[[Sequence[str]], Sequence[float]] | None = field(default=None, repr=False)
    # sentences of a part shown after it, next to the task (a list or count question: `item_sentences`)
    focus: Callable[[Segment], Sequence[str]] | None = field(default=None, repr=False)

    def shown(self, claims: Sequence[Claim]) -> str:
        """The earlier claims a worker sees: the most relevant that fit the notes cap, in document order."""
        if not self.shared or not claims:
            return ""
        texts = [render_claim(c, source=False) for c in claims]
        order = list(range(len(claims)))
        if self.rank is not None and len(claims) > 1:
            scores = list(self.rank(texts))
            order.sort(key=lambda i: -scores[i])
        else:
            order.reverse()  # the newest first
        count, cap = self.model.tokenizer.count, self.budget.notes_tokens
        chosen: list[int] = []
        for i in order:
            trial = sorted([*chosen, i])
            if count("\n".join(texts[j] for j in trial)) <= cap:
                chosen = trial
        return "\n".join(texts[j] for j in chosen)

    def messages(self, segment: Segment, claims: Sequence[Claim]) -> tuple[list[Message], int]:
        number = segment.index + 1
        focus = self.focus(segment) if self.focus is not None else ()
        messages = worker_messages(self.prompts, self.mode, self.question, segment.text, self.shown(claims), number,
                                   focus)
        return messages, worker_prefix_chars(self.prompts, segment.text, number, self.question)

    def reading(self, segment: Segment, claims: Sequence[Claim], path: int | None = None) -> Steps[ClaimStep]:
        """The worker's one call and its checked claims (backends/calls.py: `drive` or `adrive` runs it)."""
        messages, prefix = self.messages(segment, claims)
        completion = yield Call(self.model, messages, self.budget.notes_tokens, window=self.budget.window,
                                cache_prefix=prefix, tag=CallTag("worker", segment.index, path))
        return self.step(segment, claims, completion)

    def read(self, segment: Segment, claims: Sequence[Claim], path: int | None = None) -> ClaimStep:
        return drive(self.reading(segment, claims, path))

    async def aread(self, segment: Segment, claims: Sequence[Claim], path: int | None = None) -> ClaimStep:
        return await adrive(self.reading(segment, claims, path))

    def step(self, segment: Segment, claims: Sequence[Claim], completion: Completion) -> ClaimStep:
        parsed = parse_claims(completion.text, segment.index)
        if getattr(self.model, "upper_bound", False):
            # a dry run counts the calls a real reply could lead to: its stand-in text is one claim, unchecked
            stand_in = Claim(completion.text.strip() or "claim", (), segment.index, source=completion.text.strip())
            return ClaimStep([stand_in], [], completion)
        known = self.shown(claims)
        kept, dropped = check_claims(parsed, PartText(segment.text, segment.start), self.question, known)
        return ClaimStep(kept, dropped, completion)


def item_sentences(question: str, count: Callable[[str], int], room: int) -> Callable[[Segment], list[str]]:
    """For a list or count question: the sentences of a part that name what the question names (the most of its
    names, then of its other words first), at most `room` tokens, in document order; shown to the worker after its
    part.

    A reader skimming 3,000 tokens for every hound kept at Thingumby finds one of five; a person would search the
    text for "Thingumby" first. Code does that search, and the worker still decides what each sentence says (its
    claims are checked as any other). No names in the question: no sentences shown."""
    wanted_names = grounding.names(question)
    wanted = {grounding.stem(w) for w in grounding.content_words(question)} - {grounding.stem(n) for n in wanted_names}

    def pick(segment: Segment) -> list[str]:
        if not wanted_names or room <= 0:
            return []
        scored = []
        for i, (lo, hi) in enumerate(grounding.sentence_spans(segment.text)):
            sentence = segment.text[lo:hi].strip()
            folded = grounding.fold(sentence).text
            named = sum(grounding.present(n, folded) for n in wanted_names)  # ("List" opening it is one too)
            if named:
                scored.append((-named, -len(wanted & grounding.stems(sentence)), i, sentence))
        chosen, used = [], 0
        for _, _, i, sentence in sorted(scored):
            size = count(sentence) + 3
            if used + size > room:
                continue
            chosen.append((i, sentence))
            used += size
        return [sentence for _, sentence in sorted(chosen)]

    return pick


@dataclass(frozen=True)
class ManagerInput:
    """What the manager reads: the claims in the order shown, the rendered notes, and the resolution's trace."""

    claims: list[Claim]
    notes: str
    resolution: Resolution | None = None


COLLAPSE_SHARE = 4  # a collapse call may write a quarter of the window (merged claims keep their quotes)
COLLAPSE_GROUP_RATIO = 2.0  # a group's notes are at most twice what one collapse call may write


@dataclass
class ClaimManager:
    model: ChatModel
    prompts: Prompts
    mode: Mode
    question: str | None
    budget: Budget
    index: DocumentIndex | None = field(default=None, repr=False)  # the document, to follow names (bridges.py)

    # -- what the manager reads ---------------------------------------------------------------------------------
    def prepare(self, claims: Sequence[Claim], compact: bool = False, bridged: bool = True) -> ManagerInput:
        """A question: claims ranked for it, clear conflicts settled, ties marked; each with its source sentence
        unless `compact` (what is tried before merging claims that do not fit); and, when `bridged`, the sentences
        elsewhere in the document that name what the best claims introduce (bridges.py). A summary: document
        order."""
        if self.mode == "summary":
            ordered = sorted(claims, key=lambda c: (c.part, c.spans[:1]))
            return ManagerInput(ordered, render_claims(ordered, numbered=False, source=False))
        assert self.question is not None
        followed: list[Claim] = []
        if bridged and self.index is not None and not aggregate_question(self.question):
            followed = bridges(claims, self.question, self.index)
        resolution = resolve(merge_claims(claims, followed), self.question)
        lines = []
        for i, claim in enumerate(resolution.claims):
            line = render_claim(claim, i + 1, source=not compact)
            if i in resolution.notes:
                line = line.replace("\n", self.prompts.claims_missing_note.format(names=resolution.notes[i]) + "\n", 1) \
                    if "\n" in line else line + self.prompts.claims_missing_note.format(names=resolution.notes[i])
            lines.append(line)
        notes = "\n".join(lines)
        if resolution.conflicts:
            pairs = "; ".join(f"[{i + 1}] and [{j + 1}]" for i, j in resolution.conflicts)
            notes += self.prompts.claims_conflict_note.format(pairs=pairs)
        if aggregate_question(self.question) and resolution.claims:
            notes += self.prompts.claims_count_note.format(count=len(resolution.claims))
        return ManagerInput(resolution.claims, notes, resolution)

    def fitting(self, claims: Sequence[Claim]) -> ManagerInput | None:
        """The manager's input for these claims that fits its window: with sources, else compact; None if neither."""
        for compact, bridged in ((False, True), (False, False), (True, False)):
            prepared = self.prepare(claims, compact, bridged)
            if self.fits(prepared.notes):
                return prepared
        return None

    def messages(self, notes: str, extra_notes: Sequence[str] = (), sources: str = "") -> list[Message]:
        text = notes or "(none)"
        if extra_notes:
            text = "\n\n".join([text, *extra_notes])
        return manager_messages(self.prompts, self.mode, self.question, text, sources)

    def fits(self, notes: "str | CommunicationUnit", extra_notes: Sequence[str] = (), sources: str = "") -> bool:
        notes = notes.text if isinstance(notes, CommunicationUnit) else notes
        limit = min(self.budget.window, self.model.context_window)
        return self.model.count_prompt_tokens(self.messages(notes, extra_notes, sources)) + self.budget.answer_tokens <= limit

    def not_found(self, parts: int) -> str:
        return self.prompts.not_found_answer.format(parts=parts)

    # -- a summary's last resort -------------------------------------------------------------------------------------
    def claims_summary(self, claims: Sequence[Claim]) -> str:
        """The checked claims themselves, in document order, each once, within the answer's cap: what a summary
        falls back to when the manager's draft and its retry lose almost everything to the checks (a 0.5B manager
        invents a cast of "John Smith, Jane Doe"). Every sentence of it is the text's or a checked claim."""
        count, cap = self.model.tokenizer.count, self.budget.answer_tokens
        chosen: list[str] = []
        for claim in sorted(claims, key=lambda c: (c.part, c.spans[:1])):
            text = " ".join(claim.text.split())  # a copied sentence keeps the page's line breaks: not a summary's
            if text and text not in chosen and count(" ".join([*chosen, text])) <= cap:
                chosen.append(text)
        return " ".join(chosen)

    # -- a list or a count, written by code -----------------------------------------------------------------------
    @property
    def items_kind(self) -> str | None:
        """"list" or "count" when the question asks for every one of many things (questions.py): the answer is
        then every checked claim, listed and counted by code, with no manager call and no window to fit."""
        return items_asked(self.question) if self.mode == "query" and self.question else None

    def items_answer(self, claims: Sequence[Claim], parts: int) -> str | None:
        """Every checked claim in document order, each with its part; a count first for a count. The claims come
        merged (`merge_claims`: one that says what another says is one item, while two values of one sentence stay
        two), so each is counted once."""
        kind = self.items_kind
        if kind is None or not claims:
            return None
        items = sorted(claims, key=lambda c: (c.part, c.spans[:1]))
        lines = [self.prompts.items_line.format(item=c.text.strip().rstrip("."),
                                                parts=", ".join(str(p + 1) for p in c.cited_parts))
                 for c in items]
        head = (self.prompts.items_count_head if kind == "count" else self.prompts.items_list_head).format(
            count=len(items), parts=parts)
        return "\n".join([head, *lines])

    def writing(self, notes: str, extra_notes: Sequence[str] = (), sources: str = "", *, path: int | None = None,
                on_text: TextCallback | None = None) -> Steps[Completion]:
        """The manager's call (backends/calls.py: `drive` or `adrive` runs it)."""
        return (yield Call(self.model, self.messages(notes, extra_notes, sources), self.budget.answer_tokens,
                           window=self.budget.window, tag=CallTag("manager", None, path), on_text=on_text))

    def write(self, notes: str, extra_notes: Sequence[str] = (), sources: str = "", *, path: int | None = None,
              on_text: TextCallback | None = None) -> Completion:
        return drive(self.writing(notes, extra_notes, sources, path=path, on_text=on_text))

    async def awrite(self, notes: str, extra_notes: Sequence[str] = (), sources: str = "", *,
                     path: int | None = None, on_text: TextCallback | None = None) -> Completion:
        return await adrive(self.writing(notes, extra_notes, sources, path=path, on_text=on_text))

    # -- the collapse stage ---------------------------------------------------------------------------------------
    @property
    def collapse_tokens(self) -> int:
        """What one collapse call may write: more than an answer, since merged claims keep their quotes."""
        return max(self.budget.answer_tokens, min(self.budget.window, self.model.context_window) // COLLAPSE_SHARE)

    def collapse_messages(self, group: Sequence[Claim]) -> list[Message]:
        first = min(p for c in group for p in c.cited_parts) + 1
        last = max(p for c in group for p in c.cited_parts) + 1
        if self.mode == "summary":
            task = self.prompts.collapse_summary_task.format(
                notes=render_claims(group, numbered=False, source=False), first=first, last=last)
        else:
            task = self.prompts.collapse_claims_task.format(
                notes=render_claims(group, numbered=True), first=first, last=last, question=self.question)
        return [{"role": "system", "content": self.prompts.manager_system}, {"role": "user", "content": task}]

    def collapse_fits(self, group: Sequence[Claim]) -> bool:
        limit = min(self.budget.window, self.model.context_window)
        return self.model.count_prompt_tokens(self.collapse_messages(group)) + self.collapse_tokens <= limit

    def groups(self, claims: Sequence[Claim]) -> list[list[Claim]]:
        """Consecutive groups (document order) that each fit one collapse call, and whose merge fits what the call
        may write (at most COLLAPSE_GROUP_RATIO times it); a group holds at least two items where there are two."""
        ordered = sorted(claims, key=lambda c: (c.part, c.spans[:1]))
        limit = min(self.budget.window, self.model.context_window)
        fixed = self.model.count_prompt_tokens(self.collapse_messages(ordered[:1])) if ordered else 0
        room = max(1, min(limit - self.collapse_tokens - fixed, int(self.collapse_tokens * COLLAPSE_GROUP_RATIO)))
        count = self.model.tokenizer.count
        out: list[list[Claim]] = []
        current: list[Claim] = []
        used = 0
        for claim in ordered:
            size = count(render_claim(claim, 99)) + 1
            if current and used + size > room and len(current) >= 2:
                out.append(current)
                current, used = [], 0
            current.append(claim)
            used += size
        if current:
            out.append(current)
        return out

    def collapsing(self, group: Sequence[Claim], path: int | None = None) -> Steps[Completion]:
        """One collapse call over a group (backends/calls.py: `drive` or `adrive` runs it)."""
        return (yield Call(self.model, self.collapse_messages(group), self.collapse_tokens, window=self.budget.window,
                           tag=CallTag("manager", None, path, step="collapse")))

    def collapse(self, group: Sequence[Claim], path: int | None = None) -> Completion:
        return drive(self.collapsing(group, path))

    async def acollapse(self, group: Sequence[Claim], path: int | None = None) -> Completion:
        return await adrive(self.collapsing(group, path))

    def collapsed(self, group: Sequence[Claim], reply: str) -> tuple[list[Claim], list[Dropped]]:
        """The merged items of one collapse call. A question's merged claims are checked again, each against the
        source sentences of the group's claims (it inherits the spans of the claim whose source holds its quote);
        a summary's merged text becomes one note over the group's parts, with sentences naming what the document
        lacks dropped later by the summary check."""
        parts = tuple(sorted({p for c in group for p in c.cited_parts}))
        if self.mode == "summary":
            text, _ = grounding.without_repeats(reply.strip())
            if not text:
                return list(group), []
            spans = tuple(sorted({s for c in group for s in c.spans}))
            return [Claim(text, (), parts[0], spans, "", parts)], []
        kept: list[Claim] = []
        dropped: list[Dropped] = []
        for claim in parse_claims(reply, parts[0]):
            outcome: Claim | Dropped = Dropped(claim, "quote not in the sources of the claims it merges")
            for original in group:
                trial = check_claim(claim, PartText(original.source), self.question)
                if isinstance(trial, Claim):
                    outcome = Claim(trial.text, trial.quotes, original.part, original.spans, original.source,
                                    original.cited_parts)
                    break
                outcome = trial
            (kept if isinstance(outcome, Claim) else dropped).append(outcome)  # type: ignore[arg-type]
        if not kept:
            return list(group), dropped  # a collapse that kept nothing loses nothing: the group goes on as it was
        return kept, dropped

    # -- the summary check ----------------------------------------------------------------------------------------
    def fix_messages(self, summary: str, items: Sequence[str]) -> list[Message]:
        task = self.prompts.summary_fix_task.format(summary=summary, items=", ".join(items))
        return [{"role": "system", "content": self.prompts.manager_system}, {"role": "user", "content": task}]

    def fixing(self, summary: str, items: Sequence[str], path: int | None = None) -> Steps[Completion]:
        """A summary's one retry (backends/calls.py: `drive` or `adrive` runs it)."""
        return (yield Call(self.model, self.fix_messages(summary, items), self.budget.answer_tokens,
                           window=self.budget.window, tag=CallTag("manager", None, path, step="fix")))

    def fix(self, summary: str, items: Sequence[str], path: int | None = None) -> Completion:
        return drive(self.fixing(summary, items, path))

    async def afix(self, summary: str, items: Sequence[str], path: int | None = None) -> Completion:
        return await adrive(self.fixing(summary, items, path))


@dataclass(frozen=True)
class SummaryCheck:
    """A summary after the code's checks: repeated sentences removed, and what names or numbers the document
    lacks (and, after the one retry, the sentences dropped for them)."""

    text: str
    repeated: list[str]
    unsupported: list[str]
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"repeated_removed": self.repeated, "unsupported": self.unsupported, "dropped_sentences": self.dropped}


def check_summary(summary: str, document: grounding.Folded | str) -> SummaryCheck:
    text, repeated = grounding.without_repeats(summary.strip())
    return SummaryCheck(text, repeated, grounding.unsupported_entities(text, document))


def drop_unsupported(summary: str, document: grounding.Folded | str) -> SummaryCheck:
    """The summary without its sentences that name what the document lacks (the last resort after the retry)."""
    text, repeated = grounding.without_repeats(summary.strip())
    kept_paragraphs, dropped, remaining = [], [], []
    for paragraph in text.split("\n\n"):
        kept = []
        for sentence in grounding.sentences(paragraph):
            missing = grounding.unsupported_entities(sentence, document)
            if missing:
                dropped.append(sentence)
                remaining.extend(missing)
            else:
                kept.append(sentence)
        if kept:
            kept_paragraphs.append(" ".join(kept))
    return SummaryCheck("\n\n".join(kept_paragraphs), repeated, sorted(set(remaining)), dropped)
