"""The strategy seam: every way of reading a document is a small class with `run` / `arun` over a ReadingContext.

    class Strategy:
        name = "chain"
        def run(self, ctx: ReadingContext, question: str | None) -> Result: ...      # None: a summary
        async def arun(self, ctx: ReadingContext, question: str | None) -> Result: ...

The context carries what every strategy needs and nothing it should decide: the document, the model, the window,
the prompts, the checkpointer, the memory hooks, the event and streaming callbacks, and caches of the document's
segments and retrieval chunks (so a Reader asked twice does not segment or embed twice). A strategy chooses how
to read; the context makes sure every way of reading counts, checkpoints and reports the same way.
The built-in strategies write their reading once, as steps (`StepsStrategy.reading`, backends/calls.py), which
`run` and `arun` drive; a plugin may implement `run` alone.
Strategies register by name in registry.py; `Reader` (reader.py) is the facade over them.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ..agents import DEFAULT_PROMPTS, Budget, Mode, Prompts, plan_budget
from ..backends.base import ChatModel, TextCallback
from ..backends.calls import Steps, Twin, adrive, drive
from ..documents import Document
from ..errors import StrategyError
from ..results import Agent, CallRecord, Citation, EventHandler, ReadEvent, Result
from ..segmenting import Segment, segment_text
from .hooks import ChainHooks

if TYPE_CHECKING:
    import numpy as np

    from ..memory import Embedder
    from ..memory.reading import ReadingMemory

CHUNK_TOKENS = 300  # retrieval chunks: about a paragraph or two, as in the RAG baselines of the literature


def fingerprint(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def mode_of(question: str | None) -> Mode:
    if question is not None and not question.strip():
        raise ValueError("the question is empty (pass None for a summary)")
    return "summary" if question is None else "query"


@dataclass
class ReadingContext:
    document: Document
    model: ChatModel
    window: int
    prompts: Prompts = DEFAULT_PROMPTS
    checkpointer: Any = None
    memory: "ReadingMemory | None" = None
    on_event: EventHandler | None = None
    on_text: TextCallback | None = None
    fresh: bool = False  # start every thread over instead of resuming or reusing it
    embedder: "Embedder | None" = None  # made on first need (all-MiniLM-L6-v2; hashing beside a stand-in model)
    _segments: dict[int, list[Segment]] = field(default_factory=dict, repr=False)
    _chunks: dict[int, tuple[list[Segment], Any]] = field(default_factory=dict, repr=False)

    # -- the document --------------------------------------------------------------------------------------------
    @property
    def document_id(self) -> str:
        return fingerprint(self.document.text)

    def budget(self, mode: Mode, question: str | None, **caps: int) -> Budget:
        return plan_budget(self.model, self.prompts, mode, question, self.window, **caps)

    def segments(self, tokens: int) -> list[Segment]:
        if tokens not in self._segments:
            self._segments[tokens] = segment_text(self.document.text, self.model.tokenizer, tokens)
        return self._segments[tokens]

    def document_tokens(self) -> int:
        return self.model.tokenizer.count(self.document.text)

    # -- retrieval ----------------------------------------------------------------------------------------------
    def get_embedder(self) -> "Embedder":
        if self.embedder is None:
            from ..memory.embedders import embedder_for

            self.embedder = embedder_for(self.model)
        return self.embedder

    def chunks(self, tokens: int = CHUNK_TOKENS) -> tuple[list[Segment], "np.ndarray"]:
        """The document in retrieval chunks of at most `tokens` tokens, and their embeddings (computed once)."""
        if tokens not in self._chunks:
            pieces = segment_text(self.document.text, self.model.tokenizer, tokens)
            vectors = self.get_embedder().embed_documents([p.text for p in pieces])
            self._chunks[tokens] = (pieces, vectors)
        return self._chunks[tokens]

    def rank_chunks(self, query: str, tokens: int = CHUNK_TOKENS) -> list[tuple[float, Segment]]:
        """Every chunk with its cosine similarity to the query, best first (ties in document order)."""
        pieces, vectors = self.chunks(tokens)
        if not pieces:
            return []
        scores = vectors @ self.get_embedder().embed_query(query)
        ranked = sorted(range(len(pieces)), key=lambda i: (-float(scores[i]), i))
        return [(float(scores[i]), pieces[i]) for i in ranked]

    # -- runs ---------------------------------------------------------------------------------------------------
    def thread_id(self, prefix: str, *parts: object) -> str:
        """Same document, model, settings and parts -> same thread, so an interrupted run resumes."""
        kv = getattr(self.model, "kv", "")
        return f"{prefix}-{self.document_id}-" + fingerprint(self.model.name, kv, self.window, self.prompts, *parts)

    def emit(self, kind: str, agent: Agent, segment: int | None, segments: int, record: CallRecord | None = None,
             path: int | None = None) -> None:
        if self.on_event is not None:
            self.on_event(ReadEvent(kind, agent, segment, segments, record, self.document.source, path))  # type: ignore[arg-type]

    def hooks(self, segments: int, path: int | None = None, *, stream: bool = True) -> ChainHooks:
        """Chain hooks that report each call's start and end as events (and stream the manager's answer)."""
        return ChainHooks(
            started=lambda agent, segment: self.emit("call_started", agent, segment, segments, path=path),
            finished=lambda record: self.emit("call_finished", record.agent, record.segment, segments, record, path),
            on_text=self.on_text if stream else None,
        )

    def finished(self, record: CallRecord, segments: int) -> None:
        self.emit("call_finished", record.agent, record.segment, segments, record, record.path)

    def result(self, strategy: str, mode: Mode, question: str | None, text: str, *, citations: Sequence[Citation],
               segments: int, calls: Sequence[CallRecord], window: int | None = None, notes: str = "",
               document_tokens: int | None = None, extras: dict[str, Any] | None = None) -> Result:
        return Result(
            mode=mode, text=text, question=question, citations=list(citations), segments=segments,
            calls=list(calls), window=window or self.window, model=self.model.name, source=self.document.source,
            title=self.document.title, notes=notes,
            document_tokens=self.document_tokens() if document_tokens is None else document_tokens,
            extras=dict(extras or {}), strategy=strategy,
        )


class Strategy(ABC):
    """A way of reading a document. Subclasses set `name`, implement `run` and (where they can do better than
    a worker thread) `arun`, and list the checkpoint threads they use in `thread_ids`."""

    name: ClassVar[str]
    summarizes: ClassVar[bool] = True  # False: summary mode is a clear error (rag has no question to retrieve for)

    @abstractmethod
    def run(self, ctx: ReadingContext, question: str | None) -> Result:
        """Answer `question` about ctx.document, or summarize it when `question` is None."""

    async def arun(self, ctx: ReadingContext, question: str | None) -> Result:
        return await asyncio.to_thread(self.run, ctx, question)

    def thread_ids(self, ctx: ReadingContext, question: str | None) -> list[str]:
        """The checkpoint threads this strategy uses for the question (deleted by `Reader.forget`)."""
        return []

    def check_mode(self, question: str | None) -> Mode:
        mode = mode_of(question)
        if mode == "summary" and not self.summarizes:
            raise StrategyError(f"the {self.name} strategy cannot summarize: it needs a question to read for")
        return mode

    @property
    def spec(self) -> str:
        """The name with its options, as `get_strategy` parses it back (e.g. "multipath:paths=5")."""
        return self.name


class StepsStrategy(Strategy):
    """A strategy whose reading is written once, as steps (backends/calls.py): `run` drives them with the sync API
    (LangGraph's `invoke`, the model's `complete`), `arun` with the async one. The built-in strategies are these;
    a plugin may still implement `run` alone (its `arun` is then `run` in a worker thread)."""

    @abstractmethod
    def reading(self, ctx: ReadingContext, question: str | None) -> Steps[Result]:
        """The steps of answering `question` about ctx.document (None: a summary)."""

    def run(self, ctx: ReadingContext, question: str | None) -> Result:
        return drive(self.reading(ctx, question))

    async def arun(self, ctx: ReadingContext, question: str | None) -> Result:
        return await adrive(self.reading(ctx, question))


def reading_with(strategy: Strategy, ctx: ReadingContext, question: str | None) -> Steps[Result]:
    """Any strategy's reading as one step: its `run` or its `arun`, as the driver goes (a plugin's too)."""
    return (yield Twin(strategy.run, strategy.arun, ctx, question))
