"""The shared base of the one-call strategies (rag, truncate, full): choose document text, then one direct call.

A subclass implements `select(ctx, reader, question) -> Selection`: the text to put in the prompt and the spans it
came from. The base makes the call (checkpointed as a one-node graph, so a finished answer is kept), records it as
the `reader` agent's, streams it, and returns the Result with the selection's spans as citations.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..agents import DirectReader, Mode, default_caps
from ..backends.base import Completion
from ..backends.calls import Steps
from ..results import CallRecord, Citation, Result
from .base import ReadingContext, StepsStrategy
from .runs import CallState, graph_run, one_call_graph


@dataclass(frozen=True)
class Selection:
    text: str  # what the reader's prompt holds of the document
    citations: Sequence[Citation]  # the spans of the source that text came from
    segments: int  # how many pieces the document was cut into for the choice (chunks, or 1)
    extras: dict[str, Any] = field(default_factory=dict)
    window: int | None = None  # the window of the call, when not the context's (full: the model's context)


class OneCallStrategy(StepsStrategy):
    def reader(self, ctx: ReadingContext, mode: Mode, question: str | None) -> DirectReader:
        answer_tokens = default_caps(ctx.window, mode)[1]
        return DirectReader(ctx.model, ctx.prompts, mode, question, ctx.window, answer_tokens)

    @abstractmethod
    def select(self, ctx: ReadingContext, reader: DirectReader, question: str | None) -> Selection:
        """The document text for the one call, within `reader.room()` tokens (checked with `reader.fits`)."""

    def _prepare(self, ctx: ReadingContext, question: str | None):
        mode = self.check_mode(question)
        reader = self.reader(ctx, mode, question)
        selection = self.select(ctx, reader, question)
        return mode, reader, selection

    def _state(self, ctx: ReadingContext, reader: DirectReader, selection: Selection, completion: Completion) -> CallState:
        record = CallRecord.of("reader", None, completion, reader.answer_tokens)
        ctx.finished(record, selection.segments)
        return {"output": completion.text, "calls": [record.to_dict()]}

    def thread_ids(self, ctx: ReadingContext, question: str | None) -> list[str]:
        return [ctx.thread_id(self.spec, self.check_mode(question), question)]

    def _graph(self, ctx: ReadingContext, reader: DirectReader, selection: Selection) -> Any:
        def call() -> Steps[CallState]:
            ctx.emit("call_started", "reader", None, selection.segments)
            completion = yield from reader.reading(selection.text, on_text=ctx.on_text)
            return self._state(ctx, reader, selection, completion)

        return one_call_graph(call, checkpointer=ctx.checkpointer, name="reader")

    def reading(self, ctx: ReadingContext, question: str | None) -> Steps[Result]:
        mode, reader, selection = self._prepare(ctx, question)
        graph = self._graph(ctx, reader, selection)
        final, reused = yield from graph_run(graph, self.thread_ids(ctx, question)[0], {}, steps=1, fresh=ctx.fresh)
        return self._result(ctx, mode, question, reader, selection, final, reused)

    def _result(self, ctx: ReadingContext, mode: Mode, question: str | None, reader: DirectReader,
                selection: Selection, final: dict[str, Any], reused: bool) -> Result:
        return ctx.result(
            self.spec, mode, question, final.get("output", ""), citations=selection.citations,
            segments=selection.segments, calls=[CallRecord.from_dict(c) for c in final.get("calls", [])],
            window=selection.window or reader.window, extras={**selection.extras, "reused": reused},
        )
