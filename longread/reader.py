"""The public API: Reader for repeated use on one document, and the one-shot ask / summarize (+ async twins)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from .agents import DEFAULT_PROMPTS, Budget, CommunicationUnit, Manager, Mode, Prompts, Worker, plan_budget
from .agents.budget import default_window
from .backends import ChatModel, get_model
from .documents import Document, as_document
from .results import CallRecord, Citation, Result
from .segmenting import Segment, segment_text
from .workflows.chain_of_agents import ChainHooks, astream_chain, build_chain_graph, stream_chain

Source = str | Path | Document


@dataclass(frozen=True)
class ChainEvent:
    """One finished call of a run, for progress displays."""

    agent: Literal["worker", "manager"]
    segment: int | None
    segments: int
    record: CallRecord
    document: str


EventHandler = Callable[[ChainEvent], None]


def _fingerprint(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


class Reader:
    """Reads one document with Chain-of-Agents; keeps the model, segments and settings between questions.

    >>> reader = Reader("book.txt", model="local")
    >>> reader.ask("Who is the narrator?").answer
    """

    def __init__(
        self,
        source: Source,
        *,
        model: str | ChatModel = "local",
        window: int | None = None,
        kv: str | None = None,
        prompts: Prompts | None = None,
        checkpointer: Any = None,
        hooks: ChainHooks | None = None,
    ):
        self.document = as_document(source)
        self.model = get_model(model, kv=kv)
        self.window = window or default_window(self.model)
        self.prompts = prompts or DEFAULT_PROMPTS
        self.checkpointer = checkpointer
        self.hooks = hooks
        self._segments: dict[int, list[Segment]] = {}
        self._document_id = _fingerprint(self.document.text)

    # -- planning -----------------------------------------------------------------------------------------------
    def budget(self, mode: Mode, question: str | None) -> Budget:
        return plan_budget(self.model, self.prompts, mode, question, self.window)

    def segments(self, budget: int) -> list[Segment]:
        if budget not in self._segments:
            self._segments[budget] = segment_text(self.document.text, self.model.tokenizer, budget)
        return self._segments[budget]

    def thread_id(self, mode: Mode, question: str | None) -> str:
        """Same document, question, model and settings -> same thread, so an interrupted run resumes."""
        kv = getattr(self.model, "kv", "")
        return f"coa-{self._document_id}-" + _fingerprint(mode, question, self.model.name, kv, self.window, self.prompts)

    def _prepare(self, mode: Mode, question: str | None):
        if mode == "query" and not (question and question.strip()):
            raise ValueError("a question is needed (use summarize() for a summary)")
        budget = self.budget(mode, question)
        segments = self.segments(budget.segment_tokens)
        worker = Worker(self.model, self.prompts, mode, question, budget)
        manager = Manager(self.model, self.prompts, mode, question, budget)
        graph = build_chain_graph(segments, worker, manager, checkpointer=self.checkpointer, hooks=self.hooks)
        return budget, segments, graph

    # -- runs -----------------------------------------------------------------------------------------------------
    def ask(self, question: str, *, on_event: EventHandler | None = None) -> Result:
        return self._run("query", question, on_event)

    def summarize(self, *, on_event: EventHandler | None = None) -> Result:
        return self._run("summary", None, on_event)

    async def aask(self, question: str, *, on_event: EventHandler | None = None) -> Result:
        return await self._arun("query", question, on_event)

    async def asummarize(self, *, on_event: EventHandler | None = None) -> Result:
        return await self._arun("summary", None, on_event)

    def _run(self, mode: Mode, question: str | None, on_event: EventHandler | None) -> Result:
        budget, segments, graph = self._prepare(mode, question)
        final: dict[str, Any] = {}
        for kind, chunk in stream_chain(graph, self.thread_id(mode, question), len(segments)):
            final = self._handle(kind, chunk, len(segments), on_event) or final
        return self._result(mode, question, budget, segments, final)

    async def _arun(self, mode: Mode, question: str | None, on_event: EventHandler | None) -> Result:
        budget, segments, graph = self._prepare(mode, question)
        final: dict[str, Any] = {}
        async for kind, chunk in astream_chain(graph, self.thread_id(mode, question), len(segments)):
            final = self._handle(kind, chunk, len(segments), on_event) or final
        return self._result(mode, question, budget, segments, final)

    def _handle(self, kind: str, chunk: dict, total: int, on_event: EventHandler | None) -> dict | None:
        if kind == "final":
            return chunk
        if on_event:
            for node, update in chunk.items():
                for record in (update or {}).get("calls", []):
                    call = CallRecord(**record)
                    on_event(ChainEvent(node, call.segment, total, call, self.document.source))  # type: ignore[arg-type]
        return None

    def _result(self, mode: Mode, question: str | None, budget: Budget, segments: list[Segment], final: dict) -> Result:
        notes = CommunicationUnit.from_dict(final.get("notes", {}))
        citations = [Citation(i, segments[i].start, segments[i].end) for i in notes.evidence if i < len(segments)]
        return Result(
            mode=mode,
            text=final.get("output", ""),
            question=question,
            citations=citations,
            segments=len(segments),
            calls=[CallRecord(**c) for c in final.get("calls", [])],
            window=budget.window,
            model=self.model.name,
            source=self.document.source,
            title=self.document.title,
            notes=notes.text,
            document_tokens=sum(s.tokens for s in segments),
        )


def ask(source: Source, question: str, *, model: str | ChatModel = "local", window: int | None = None,
        kv: str | None = None, **options: Any) -> Result:
    """Answer a question about a document (a path, a string of text or a Document)."""
    return Reader(source, model=model, window=window, kv=kv, **options).ask(question)


def summarize(source: Source, *, model: str | ChatModel = "local", window: int | None = None,
              kv: str | None = None, **options: Any) -> Result:
    """Summarize a document (a path, a string of text or a Document)."""
    return Reader(source, model=model, window=window, kv=kv, **options).summarize()


async def aask(source: Source, question: str, *, model: str | ChatModel = "local", window: int | None = None,
               kv: str | None = None, **options: Any) -> Result:
    return await Reader(source, model=model, window=window, kv=kv, **options).aask(question)


async def asummarize(source: Source, *, model: str | ChatModel = "local", window: int | None = None,
                     kv: str | None = None, **options: Any) -> Result:
    return await Reader(source, model=model, window=window, kv=kv, **options).asummarize()
