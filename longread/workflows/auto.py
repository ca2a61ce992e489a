"""`auto`: retrieval first, the chain only when retrieval cannot answer (Self-Route: Li et al., "Retrieval
Augmented Generation or Long-Context LLMs? A Comprehensive Study and Hybrid Approach", EMNLP 2024 Industry).

Self-Route asks the model to answer from the retrieved chunks or to say the question is unanswerable from them;
only then does it pay for reading everything. Here the retrieval step is `rag` whose reader may say the excerpts
do not hold the answer, and the fallback reads the whole document with the grounded chain (`chain`: checked
claims, a manager that settles conflicts; docs/quality.md).
An answer is also sent on when it states a number that the retrieved excerpts do not hold (a small model that
cannot find a figure writes a plausible one), or when what it adds to the question (a number, a name) stands in no
excerpt sentence that also names the question's names (`claims.ungrounded_answer`: a distractor's sentence, or
the second half of a pair read without the first). Two kinds of reading go straight to the chain, because retrieval
cannot hold what they need: a summary (no question to retrieve for), and an aggregate question, whose answer is
spread over the book (list every ..., how many ... there were, compare ...; `aggregate_question`).
`Result.extras["route"]` says which way a question went, and `route_reason` why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, ClassVar

from ..agents import DirectReader, Mode, default_caps
from ..agents.claims import ungrounded_answer
from ..agents.notes import unsupported_numbers
from ..agents.questions import aggregate_question
from ..agents.replies import found_nothing
from ..errors import WindowTooSmall
from ..memory.reading import INSUFFICIENT_PHRASES
from ..results import ReadEvent, Result
from ..backends.calls import Steps
from .base import ReadingContext, StepsStrategy, Strategy, reading_with
from .rag import RagStrategy
from .registry import get_strategy

log = logging.getLogger(__name__)


class HeldText:
    """The retrieval step's streamed answer, kept until `auto` knows it stands: text that the fallback would then
    replace is never shown (released whole when retrieval answered, dropped when the document is read instead)."""

    def __init__(self, on_text: Callable[[str], None]):
        self.on_text = on_text
        self.pieces: list[str] = []

    def __call__(self, piece: str) -> None:
        self.pieces.append(piece)

    def release(self) -> None:
        if self.pieces:
            self.on_text("".join(self.pieces))


@dataclass
class RouteStep(RagStrategy):
    """rag whose reader may answer UNANSWERABLE (not registered: the first step of `auto`)."""

    @property
    def spec(self) -> str:
        return "route" + super().spec[len("rag"):]  # "route:budget=1024": its own checkpoint thread per setting

    def reader(self, ctx: ReadingContext, mode: Mode, question: str | None) -> DirectReader:
        prompts = ctx.prompts.with_overrides(reader_query_task=ctx.prompts.route_query_task)
        return DirectReader(ctx.model, prompts, mode, question, ctx.window, default_caps(ctx.window, mode)[1])


@dataclass
class AutoStrategy(StepsStrategy):
    """Retrieval, then (only when it cannot answer) the whole document with `fallback`."""

    name: ClassVar[str] = "auto"
    fallback: str = "chain"
    budget: int = 0  # the retrieval step's excerpt tokens (rag's `budget`; 0: as many as the window holds)

    @property
    def spec(self) -> str:
        # (the fallback is a spec of its own, commas and all: it stays out, and names its own threads)
        return f"{self.name}:budget={self.budget}" if self.budget else self.name

    def route(self) -> RouteStep:
        return RouteStep(budget=self.budget)

    def _fallback(self) -> Strategy:
        return get_strategy(self.fallback)

    def thread_ids(self, ctx: ReadingContext, question: str | None) -> list[str]:
        route = self.route().thread_ids(ctx, question) if question is not None and not aggregate_question(question) \
            else []
        return route + self._fallback().thread_ids(ctx, question)

    AGGREGATE_REASON = "an aggregate question: its answer is spread over the document, so all of it is read"

    def reading(self, ctx: ReadingContext, question: str | None) -> Steps[Result]:
        if self.check_mode(question) == "summary":
            whole = yield from reading_with(self._fallback(), ctx, None)
            return self._relabel(whole, "summary: the whole document is read")
        if aggregate_question(question):
            self._tell_aggregate(ctx)
            return self._relabel((yield from reading_with(self._fallback(), ctx, question)), self.AGGREGATE_REASON)
        held = HeldText(ctx.on_text) if ctx.on_text is not None else None
        first = yield from self.route().reading(replace(ctx, on_text=held), question)
        why = self.why_not_answered(ctx, first, question)
        self._tell(ctx, first, why, held)
        if why is None:
            return self._relabel(first, "retrieval answered")
        try:
            second = yield from reading_with(self._fallback(), ctx, question)
        except WindowTooSmall as exc:
            return self._kept(first, why, exc)
        return self._combine(ctx, first, second, why)

    @staticmethod
    def _tell_aggregate(ctx: ReadingContext) -> None:
        """An aggregate question goes to the chain at once: the display and --verbose say so."""
        log.info("%s: auto: an aggregate question; reading the whole document", ctx.document.source)
        if ctx.on_event is not None:
            ctx.on_event(ReadEvent("routed", "reader", None, 0, None, ctx.document.source,
                                   message="an aggregate question, reading every part"))

    @staticmethod
    def _tell(ctx: ReadingContext, first: Result, why: str | None, held: HeldText | None) -> None:
        """Which way the question went: a `routed` event for the display, a line for --verbose; the retrieval
        answer's text is let out only when it stands."""
        if why is None:
            shown, said = "retrieval answered", f"auto: retrieval answered from {len(first.citations)} excerpt(s)"
        else:
            shown, said = "retrieval found nothing, reading every part", f"auto: {why}; reading the whole document"
        log.info("%s: %s", ctx.document.source, said)
        if ctx.on_event is not None:
            ctx.on_event(ReadEvent("routed", "reader", None, first.segments, None, ctx.document.source,
                                   message=shown))
        if why is None and held is not None:
            held.release()

    @staticmethod
    def why_not_answered(ctx: ReadingContext, result: Result, question: str) -> str | None:
        """None when retrieval's answer stands; else why the whole document is read."""
        if getattr(ctx.model, "upper_bound", False):
            return "a dry run counts the fallback"  # the cost bound takes the branch a real reply could lead to
        if found_nothing(result.text, ctx.prompts.unanswerable, INSUFFICIENT_PHRASES):
            return f"retrieval could not answer ({result.text.strip()[:60]!r})"
        pieces, _ = ctx.chunks(RouteStep().chunk_tokens)
        excerpts = "\n".join(pieces[i].text for i in result.extras.get("retrieved", []) if 0 <= i < len(pieces))
        return AutoStrategy.unsupported_answer(result.text, excerpts, question)

    @staticmethod
    def unsupported_answer(answer: str, excerpts: str, question: str) -> str | None:
        """Why retrieval's answer does not stand on its excerpts (a number they lack, or what it adds standing in no
        sentence that names the question's names), or None."""
        invented = unsupported_numbers(answer, excerpts, question)
        if invented:
            return f"retrieval's answer states {', '.join(invented[:3])}, which its excerpts do not hold"
        loose = ungrounded_answer(answer, excerpts, question)
        if loose:
            return f"retrieval's answer does not rest on its excerpts: {loose}"
        return None

    def _relabel(self, result: Result, reason: str) -> Result:
        from dataclasses import replace

        route = "rag" if reason == "retrieval answered" else self.fallback
        return replace(result, strategy=self.spec, extras={**result.extras, "route": route, "route_reason": reason})

    def _kept(self, first: Result, why: str, exc: WindowTooSmall) -> Result:
        """The fallback cannot work in this window (a chain worker needs room for its part, notes and output that
        one retrieval call does not): the retrieval answer that was paid for is kept, and the reason says why."""
        log.info("auto: %s, but %s cannot read at this window: %s", why, self.fallback, exc)
        return replace(first, strategy=self.spec, extras={
            **first.extras, "route": "rag", "route_reason": f"{why}; {self.fallback} does not fit the window, so "
                                                             "retrieval's answer is kept"})

    def _combine(self, ctx: ReadingContext, first: Result, second: Result, why: str) -> Result:
        from dataclasses import replace

        reason = f"{why}: {self.fallback} read the document"
        return replace(second, strategy=self.spec, calls=[*first.calls, *second.calls],
                       extras={**second.extras, "route": self.fallback, "route_reason": reason,
                               "retrieved": first.extras.get("retrieved", [])})
