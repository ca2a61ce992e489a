"""The public API: Reader for repeated use on one document, and the one-shot ask / summarize (+ async twins).

Reader is a facade: it holds the document, the model, the window, the memory and the strategy, and delegates the
reading to the strategy (workflows/). The memory policy lives in memory/ (ReadingMemory and the controller).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping, Sequence

from .agents import DEFAULT_PROMPTS, Budget, Mode, Prompts, default_window
from .backends import ChatModel, check_model, get_model
from .backends.base import CallTag, Completion, Message, TextCallback
from .backends.calls import Steps, Twin, adrive, drive
from .documents import Document, as_document
from .results import CallRecord, ChainEvent, Citation, EventHandler, ReadEvent, Result, unique_citations
from .segmenting import Segment
from .workflows.base import ReadingContext, Strategy, fingerprint, reading_with
from .workflows.registry import get_strategy
from .workflows.runs import forget

if TYPE_CHECKING:
    from .backends.cache import CompletionCache
    from .memory import Embedder, MemoryStream, RetrievalConfig
    from .workflows.chat import ChatSteps

Source = str | Path | Document
AnsweredFrom = Literal["memory", "chain"]

__all__ = ["ChainEvent", "EventHandler", "ReadEvent", "Reader", "aask", "ask", "asummarize", "default_session",
           "summarize"]


def default_session(document: Document) -> str:
    """The memory session of a document when none is named: its content's fingerprint, so every Reader (and
    every `longread chat`) of the same text shares its notes, whatever the file is called."""
    return f"doc-{fingerprint(document.text)}"


class Reader:
    """Reads one document with a strategy (default `chain`); keeps the model, segments and settings between
    questions.

    >>> reader = Reader("book.txt", model="local", strategy="lookback")
    >>> reader.ask("Who is the narrator?").answer

    `api_base` sends an API model's calls to that server (`longread serve`, vLLM: docs/serving.md).
    `strategy` is a name from `longread.workflows.available_strategies()` (chain, lookback, multipath, rag,
    truncate, full, auto, and what plugins add), a spec with options (`"multipath:paths=5"`), or a Strategy.

    **Memory** (Self-Controlled Memory, Wang et al., arXiv:2304.13343). With `memory=` (a MemoryStream, or the
    path of one, opened with `embedder`, all-MiniLM-L6-v2 by default), the reader keeps what its agents write in
    the session `session` (default: derived from the document's fingerprint, see `default_session`):

    - every worker CU that is not passed on is archived as a `note` with the span of the segment it read;
    - the manager receives the last CU plus the archived notes the controller ranks best for the question
      (a summary: the notes that tell the story), as many as fit the room its budget leaves;
    - each question and answer is archived (kinds `question` and `answer`), a summary as `summary`.

    The rule for a question (`ask`), shown in `Result.extras["answered_from"]` and `["reason"]`:

    1. no note of the document in memory yet -> the strategy reads the document ("chain");
    2. else the controller's activation gate (`activation`: "always" by default, since every question to a
       Reader is about its document; "llm" asks the model; "never") and retrieval activate the top-k notes
       (`top_k`); the model answers from them in one call, told to reply exactly INSUFFICIENT when they do
       not hold the answer;
    3. if the reply is judged insufficient, or nothing was activated, the strategy reads the document again with
       the question ("chain", and its calls include the attempt); otherwise the answer stands ("memory": no
       segment is read again, `Result.segments` is 0 and the citations are the spans of the notes used).

    Without memory (the default) every question is one pass of the strategy.
    `controller_options` go to `MemoryController` (budget, summary_threshold, prompts, ...).
    `timeout`: seconds an API model has to answer one call before it is tried again (default 120); a model
    string only (a ChatModel keeps its own).
    `checkpointer` (a LangGraph saver) makes every run resumable: an interrupted run resumes, a finished one is
    returned again without a call; `forget(question)` starts it over.

    **Client conventions.** `ask(question, schema=...)` (a JSON schema or a pydantic model) answers as usual, then
    writes the answer as JSON for the schema in one more call, validated, retried once with the validation error
    (longread/structured.py): `Result.data` holds the object. `cache=True` (or the path of a SQLite file)
    answers a call already made with the same model, prompt and sampling settings from the completion cache
    (backends/cache.py; default file: the user cache's workspace/completions.sqlite). `trace=True` (or
    LONGREAD_TRACE_OTEL=1) puts OpenTelemetry spans on each run, agent step and model call (tracing.py), sent to
    the application's tracer provider.
    """

    def __init__(
        self,
        source: Source,
        *,
        model: str | ChatModel = "local",
        window: int | None = None,
        kv: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        strategy: str | Strategy | None = None,
        prompts: Prompts | None = None,
        checkpointer: Any = None,
        memory: MemoryStream | str | Path | None = None,
        session: str | None = None,
        embedder: Embedder | None = None,
        activation: Literal["llm", "always", "never"] = "always",
        top_k: int = 5,
        retrieval: RetrievalConfig | None = None,
        controller_options: Mapping[str, Any] | None = None,
        cache: "bool | str | Path | CompletionCache | None" = None,
        trace: bool | None = None,
    ):
        self.document = as_document(source)
        if isinstance(model, str):  # as the command line does: a missing key is refused before any call
            check_model(model, need_key=api_base is None)
        # get_model drops the options left at None
        self.model = wrapped_model(get_model(model, kv=kv, api_base=api_base, timeout=timeout), cache, trace)
        self.window = window or default_window(self.model)
        self.strategy = get_strategy(strategy)
        self.prompts = prompts or DEFAULT_PROMPTS
        self.checkpointer = checkpointer
        self.session = session or default_session(self.document)
        self.memory: MemoryStream | None = None
        self.controller = None
        self._owns_memory = False
        self._answer_graph: Any = None
        self._context = ReadingContext(self.document, self.model, self.window, self.prompts, checkpointer,
                                       embedder=embedder)
        if memory is not None:
            self._open_memory(memory, embedder, activation, top_k, retrieval, dict(controller_options or {}))

    def _open_memory(self, memory, embedder, activation, top_k, retrieval, options) -> None:
        from .memory import MemoryController, MemoryStream, RetrievalConfig
        from .memory.reading import ReadingMemory

        if isinstance(memory, MemoryStream):
            self.memory = memory
        else:
            # The model's tokenizer counts item tokens, so the controller's budgets are in the window's tokens.
            self.memory = MemoryStream(memory, embedder=embedder, tokenizer=self.model.tokenizer)
            self._owns_memory = True
        self.controller = MemoryController(
            self.model, self.memory, activation=activation, top_k=top_k,
            retrieval=retrieval or RetrievalConfig(), window=self.window, **options,
        )
        self._context.memory = ReadingMemory(self.controller, self.session)

    def close(self) -> None:
        """Closes the memory file if this reader opened it."""
        if self._owns_memory and self.memory is not None:
            self.memory.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- planning -----------------------------------------------------------------------------------------------
    def budget(self, mode: Mode, question: str | None) -> Budget:
        """The chain's window budget for a question (or a summary)."""
        return self._context.budget(mode, question)

    def segments(self, budget: int) -> list[Segment]:
        return self._context.segments(budget)

    def thread_ids(self, question: str | None = None) -> list[str]:
        """The checkpoint threads the strategy uses for a question (None: the summary)."""
        return self.strategy.thread_ids(self._context, question)

    def thread_id(self, mode: Mode, question: str | None) -> str:
        """The first checkpoint thread of a run (the chain's, for the chain strategy)."""
        return self.thread_ids(question if mode == "query" else None)[0]

    def forget(self, question: str | None = None) -> None:
        """Deletes the checkpoints of a question's run (None: the summary), so the next run starts over."""
        forget(self.checkpointer, self.thread_ids(question))

    def context(self, on_event: EventHandler | None = None, on_text: TextCallback | None = None) -> ReadingContext:
        """The reading context of one run: this reader's, with the run's callbacks (its caches are shared)."""
        return replace(self._context, on_event=on_event, on_text=on_text)

    # -- runs -----------------------------------------------------------------------------------------------------
    def ask(self, question: str, *, schema: Any = None, on_event: EventHandler | None = None,
            on_text: TextCallback | None = None) -> Result:
        """The answer; with memory, from memory first (see the class docstring for the rule). With `schema`, also
        as an object in `Result.data`."""
        return drive(self._asking(question, schema, on_event, on_text))

    def summarize(self, *, schema: Any = None, on_event: EventHandler | None = None,
                  on_text: TextCallback | None = None) -> Result:
        return drive(self._summarizing(schema, on_event, on_text))

    async def aask(self, question: str, *, schema: Any = None, on_event: EventHandler | None = None,
                   on_text: TextCallback | None = None) -> Result:
        return await adrive(self._asking(question, schema, on_event, on_text))

    async def asummarize(self, *, schema: Any = None, on_event: EventHandler | None = None,
                         on_text: TextCallback | None = None) -> Result:
        return await adrive(self._summarizing(schema, on_event, on_text))

    def read(self, question: str, *, schema: Any = None, on_event: EventHandler | None = None,
             on_text: TextCallback | None = None) -> Result:
        """One pass of the strategy over the whole document for the question, whatever memory holds."""
        return drive(self._asking(question, schema, on_event, on_text, from_memory=False))

    # The runs written once, as steps (backends/calls.py): the sync methods drive them with the sync API (the
    # strategy's `run`, the graph's `invoke`), the async ones with the async API.
    def _asking(self, question: str, schema: Any, on_event: EventHandler | None, on_text: TextCallback | None,
                from_memory: bool = True) -> Steps[Result]:
        self._check_question(question)
        schema = _checked_schema(schema)
        with self._run_span("query") as finished:
            if self.memory is None or not from_memory:
                result = yield from reading_with(self.strategy, self.context(on_event, on_text), question)
            else:
                graph = self._memory_graph(on_event, on_text)
                result = self._answer_from_graph((yield Twin(graph.invoke, graph.ainvoke, {"question": question})))
            return finished((yield from self._structuring(result, schema, on_event)))

    def _summarizing(self, schema: Any, on_event: EventHandler | None, on_text: TextCallback | None
                     ) -> Steps[Result]:
        schema = _checked_schema(schema)
        with self._run_span("summary") as finished:
            result = yield from reading_with(self.strategy, self.context(on_event, on_text), None)
            result = self._remember_summary(result)
            return finished((yield from self._structuring(result, schema, on_event)))

    # -- client conventions: the run's span, a structured answer ------------------------------------------------
    @contextmanager
    def _run_span(self, mode: str) -> Iterator[Callable[[Result], Result]]:
        """The run's OpenTelemetry span when this reader's model is traced; yields `finished(result) -> result`,
        which records the run's totals on it."""
        from .tracing import TracedModel, run_span

        if not isinstance(self.model, TracedModel):
            yield lambda result: result
            return
        with run_span(self.model, self.strategy.spec, mode, self.document.source) as record:
            def finished(result: Result) -> Result:
                record(result)
                return result

            yield finished

    def _structuring(self, result: Result, schema: Any, on_event: EventHandler | None) -> Steps[Result]:
        if schema is None:
            return result
        from .structured import structuring

        return (yield from structuring(self.model, result, schema, window=self.window, on_event=on_event))

    @staticmethod
    def _check_question(question: str) -> None:
        if not (question and question.strip()):
            raise ValueError("a question is needed (use summarize() for a summary)")

    # -- memory ---------------------------------------------------------------------------------------------------
    def has_notes(self) -> bool:
        """Whether memory holds notes of this document's session (a chain pass has read it)."""
        return self._context.memory is not None and self._context.memory.has_notes()

    def answer_tokens(self, question: str) -> int:
        """The answer cap of a question, the same from memory as from the manager of a chain pass."""
        return self.budget("query", question).answer_tokens

    def chat_steps(self, *, on_event: EventHandler | None = None, on_text: TextCallback | None = None) -> "ChatSteps":
        """The steps of a chat turn over this reader (workflows/chat.py): its memory, one answer call from the fused
        prompt, and a fresh read with its strategy."""
        from .workflows.chat import ChatSteps

        if self._context.memory is None:
            raise ValueError("a chat session needs a Reader with memory (memory=PATH or a MemoryStream)")

        def respond(question: str, messages: Sequence[Message]) -> tuple[Completion, CallRecord]:
            cap = self.answer_tokens(question)
            completion = self.model.complete(messages, cap, window=self.window, tag=CallTag("manager", step="memory"),
                                             on_text=on_text)
            return completion, CallRecord.of("manager", None, completion, cap)

        return ChatSteps(
            memory=self._context.memory, window=self.window, answer_tokens=self.answer_tokens, respond=respond,
            read=lambda question: self.read(question, on_event=on_event, on_text=on_text),
        )

    def _remember_summary(self, result: Result) -> Result:
        if self._context.memory is None:
            return result
        self._context.memory.remember_summary(result.text, result.citations)
        extras = {**result.extras, "answered_from": "chain", "reason": "a summary reads the whole document"}
        return replace(result, extras=extras)

    def _memory_graph(self, on_event: EventHandler | None, on_text: TextCallback | None) -> Any:
        from .workflows.chat import build_chat_graph

        # A graph per callback is cheap (no model or file is opened); without callbacks it is kept.
        if on_event is not None or on_text is not None:
            return build_chat_graph(self.chat_steps(on_event=on_event, on_text=on_text))
        if self._answer_graph is None:
            self._answer_graph = build_chat_graph(self.chat_steps())
        return self._answer_graph

    def _answer_from_graph(self, state: Mapping[str, Any]) -> Result:
        return turn_result(self, state["history"][-1])


def wrapped_model(model: ChatModel, cache: Any, trace: bool | None) -> ChatModel:
    """The model behind the completion cache and the tracing a Reader is asked for (each at most once)."""
    if cache is not None and cache is not False:
        from .backends.cache import CachedModel, with_cache
        from .backends.local.weights import cache_root

        if not isinstance(model, CachedModel):
            model = with_cache(model, cache, cache_root() / "workspace")
    from .tracing import TracedModel, wanted

    if isinstance(model, TracedModel):
        # A traced model shared by several readers (a --jobs run) gets a wrapper per reader: each keeps the context of
        # its own run for the calls its strategy makes in threads that did not inherit it (multipath's paths).
        return TracedModel(model.inner, model.tracer)
    if wanted(trace):
        model = TracedModel(model)
    return model


def _checked_schema(schema: Any) -> Any:
    """An OutputSchema, checked before any call (SchemaError); None stays None."""
    if schema is None:
        return None
    from .structured import as_schema

    return as_schema(schema)


def turn_result(reader: Reader, turn: Mapping[str, Any]) -> Result:
    """A finished chat turn as a Result, with `extras["answered_from"]` and `["reason"]` (the rule in Reader)."""
    return Result(
        mode="query",
        text=turn["answer"],
        question=turn["question"],
        citations=[Citation(**c) for c in turn["citations"]],
        segments=turn["segments"],
        calls=[CallRecord.from_dict(c) for c in turn["calls"]],
        window=reader.window,
        model=reader.model.name,
        source=reader.document.source,
        title=reader.document.title,
        notes=turn["notes"],
        document_tokens=turn["document_tokens"],
        extras={
            "answered_from": turn["answered_from"], "reason": turn["reason"], "session": reader.session,
            "activated": [a["id"] for a in turn["activated"]], "used": list(turn["used"]),
            "recalled": list(turn.get("recalled", [])),
        },
        strategy=reader.strategy.spec,
    )


def citations_of(spans: Sequence[Any]) -> list[Citation]:
    """Citations from memory spans, each once, in document order (kept for earlier callers)."""
    return unique_citations(spans)


def ask(source: Source, question: str, *, model: str | ChatModel = "local", window: int | None = None,
        kv: str | None = None, strategy: str | Strategy | None = None, schema: Any = None, **options: Any) -> Result:
    """Answer a question about a document (a path, a string of text or a Document); with `schema` (a JSON schema
    or a pydantic model), `Result.data` holds the answer as an object. Other options are Reader's."""
    return Reader(source, model=model, window=window, kv=kv, strategy=strategy, **options).ask(question, schema=schema)


def summarize(source: Source, *, model: str | ChatModel = "local", window: int | None = None,
              kv: str | None = None, strategy: str | Strategy | None = None, schema: Any = None,
              **options: Any) -> Result:
    """Summarize a document (a path, a string of text or a Document)."""
    return Reader(source, model=model, window=window, kv=kv, strategy=strategy, **options).summarize(schema=schema)


async def aask(source: Source, question: str, *, model: str | ChatModel = "local", window: int | None = None,
               kv: str | None = None, strategy: str | Strategy | None = None, schema: Any = None,
               **options: Any) -> Result:
    reader = Reader(source, model=model, window=window, kv=kv, strategy=strategy, **options)
    return await reader.aask(question, schema=schema)


async def asummarize(source: Source, *, model: str | ChatModel = "local", window: int | None = None,
                     kv: str | None = None, strategy: str | Strategy | None = None, schema: Any = None,
                     **options: Any) -> Result:
    reader = Reader(source, model=model, window=window, kv=kv, strategy=strategy, **options)
    return await reader.asummarize(schema=schema)
