"""`auto`: retrieval first, the chain only when retrieval cannot answer (Self-Route: Li et al., "Retrieval
Augmented Generation or Long-Context LLMs? A Comprehensive Study and Hybrid Approach", EMNLP 2024 Industry).

Self-Route asks the model to answer from the retrieved chunks or to say the question is unanswerable from them;
only then does it pay for reading everything. Here the retrieval step is `rag` whose reader may say the excerpts
do not hold the answer, and the fallback reads the whole document with the grounded chain (`chain`: checked
claims, a manager that settles conflicts; docs/quality.md).
An answer is also sent on when it states a number that the retrieved excerpts do not hold (a small model that
cannot find a figure writes a plausible one). Two kinds of reading go straight to the chain, because retrieval
cannot hold what they need: a summary (no question to retrieve for), and an aggregate question, whose answer is
spread over the book (list every ..., how many ... there were, compare ...; `aggregate_question`).
`Result.extras["route"]` says which way a question went, and `route_reason` why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..agents import DirectReader, Mode, default_caps
from ..agents.notes import unsupported_numbers
from ..agents.questions import aggregate_question
from ..agents.replies import found_nothing
from ..memory.reading import INSUFFICIENT_PHRASES
from ..results import Result
from .base import ReadingContext, Strategy
from .rag import RagStrategy


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
class AutoStrategy(Strategy):
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
        from .registry import get_strategy

        return get_strategy(self.fallback)

    def thread_ids(self, ctx: ReadingContext, question: str | None) -> list[str]:
        route = self.route().thread_ids(ctx, question) if question is not None and not aggregate_question(question) \
            else []
        return route + self._fallback().thread_ids(ctx, question)

    AGGREGATE_REASON = "an aggregate question: its answer is spread over the document, so all of it is read"

    def run(self, ctx: ReadingContext, question: str | None) -> Result:
        if self.check_mode(question) == "summary":
            return self._relabel(self._fallback().run(ctx, None), "summary: the whole document is read")
        if aggregate_question(question):
            return self._relabel(self._fallback().run(ctx, question), self.AGGREGATE_REASON)
        first = self.route().run(ctx, question)
        why = self.why_not_answered(ctx, first, question)
        if why is None:
            return self._relabel(first, "retrieval answered")
        return self._combine(ctx, first, self._fallback().run(ctx, question), why)

    async def arun(self, ctx: ReadingContext, question: str | None) -> Result:
        if self.check_mode(question) == "summary":
            return self._relabel(await self._fallback().arun(ctx, None), "summary: the whole document is read")
        if aggregate_question(question):
            return self._relabel(await self._fallback().arun(ctx, question), self.AGGREGATE_REASON)
        first = await self.route().arun(ctx, question)
        why = self.why_not_answered(ctx, first, question)
        if why is None:
            return self._relabel(first, "retrieval answered")
        return self._combine(ctx, first, await self._fallback().arun(ctx, question), why)

    @staticmethod
    def why_not_answered(ctx: ReadingContext, result: Result, question: str) -> str | None:
        """None when retrieval's answer stands; else why the whole document is read."""
        if getattr(ctx.model, "upper_bound", False):
            return "a dry run counts the fallback"  # the cost bound takes the branch a real reply could lead to
        if found_nothing(result.text, ctx.prompts.unanswerable, INSUFFICIENT_PHRASES):
            return f"retrieval could not answer ({result.text.strip()[:60]!r})"
        pieces, _ = ctx.chunks(RouteStep().chunk_tokens)
        excerpts = "\n".join(pieces[i].text for i in result.extras.get("retrieved", []) if 0 <= i < len(pieces))
        invented = unsupported_numbers(result.text, excerpts, question)
        if invented:
            return f"retrieval's answer states {', '.join(invented[:3])}, which its excerpts do not hold"
        return None

    def _relabel(self, result: Result, reason: str) -> Result:
        from dataclasses import replace

        route = "rag" if reason == "retrieval answered" else self.fallback
        return replace(result, strategy=self.spec, extras={**result.extras, "route": route, "route_reason": reason})

    def _combine(self, ctx: ReadingContext, first: Result, second: Result, why: str) -> Result:
        from dataclasses import replace

        reason = f"{why}: {self.fallback} read the document"
        return replace(second, strategy=self.spec, calls=[*first.calls, *second.calls],
                       extras={**second.extras, "route": self.fallback, "route_reason": reason,
                               "retrieved": first.extras.get("retrieved", [])})
