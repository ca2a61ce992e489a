"""The public API: Reader for repeated use on one document, and the one-shot ask / summarize (+ async twins)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

from .agents import DEFAULT_PROMPTS, Budget, CommunicationUnit, Manager, Mode, Prompts, Worker, plan_budget
from .agents.budget import default_window
from .agents.prompts import NOTHING_FOUND_PHRASES
from .backends import ChatModel, get_model
from .backends.base import Completion, Message
from .documents import Document, as_document
from .results import CallRecord, Citation, Result
from .segmenting import Segment, segment_text
from .workflows.chain_of_agents import ChainHooks, astream_chain, build_chain_graph, stream_chain

if TYPE_CHECKING:
    from .memory import Embedder, FusedPrompt, MemoryController, MemoryStream, Recalled, RetrievalConfig

Source = str | Path | Document
AnsweredFrom = Literal["memory", "chain"]


@dataclass(frozen=True)
class ChainEvent:
    """One finished call of a run, for progress displays."""

    agent: Literal["worker", "manager"]
    segment: int | None
    segments: int
    record: CallRecord
    document: str


EventHandler = Callable[[ChainEvent], None]

# -- memory: the rule of "answered from memory", and its prompts -------------------------------------------------------
INSUFFICIENT = "INSUFFICIENT"
MEMORY_ANSWER_SYSTEM = (
    "You answer questions about a long document from memory: notes that readers wrote while reading it, and "
    "earlier questions and answers. Answer briefly from the memory, quoting names and numbers exactly. "
    f"If the memory does not contain the answer, reply with exactly: {INSUFFICIENT}"
)
# A summary has no question to rank notes by; this query finds the notes that tell the story.
SUMMARY_RECALL_QUERY = "the main events, people, places and ideas of the whole document"
RECALLED_NOTE = "Earlier notes (part {part}): {text}"
RECALLED_SUMMARY = "An earlier summary of the whole document: {text}"
# Replies that say "I cannot answer from this" without the marker (small models paraphrase it).
_INSUFFICIENT_PHRASES = NOTHING_FOUND_PHRASES + (
    "insufficient", "do not contain", "does not contain", "doesn't contain", "don't contain", "not mentioned",
    "cannot answer", "can't answer", "cannot be answered", "no answer", "not in the memory", "not in the notes",
)


def judged_insufficient(reply: str) -> bool:
    """True when a reply from memory says memory cannot answer: the INSUFFICIENT marker, an empty reply, or a
    short reply that only says so in other words (a long reply that mentions a phrase may still answer)."""
    text = reply.strip().strip(".!\"'`*#_ ").lower()
    if not text or text.startswith(INSUFFICIENT.lower()):
        return True
    return len(text) < 160 and any(phrase in text for phrase in _INSUFFICIENT_PHRASES)


def _fingerprint(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def default_session(document: Document) -> str:
    """The memory session of a document when none is named: its content's fingerprint, so every Reader (and
    every `longread chat`) of the same text shares its notes, whatever the file is called."""
    return f"doc-{_fingerprint(document.text)}"


def citations_of(spans: Sequence[Any]) -> list[Citation]:
    """Citations from memory spans, each once, in document order."""
    unique = {(int(s.segment), int(s.start), int(s.end)) for s in spans}
    return [Citation(*span) for span in sorted(unique)]


class Reader:
    """Reads one document with Chain-of-Agents; keeps the model, segments and settings between questions.

    >>> reader = Reader("book.txt", model="local")
    >>> reader.ask("Who is the narrator?").answer

    **Memory** (Self-Controlled Memory, Wang et al., arXiv:2304.13343). With `memory=` (a MemoryStream, or the
    path of one, opened with `embedder`, all-MiniLM-L6-v2 by default), the reader keeps what its agents write in
    the session `session` (default: derived from the document's fingerprint, see `default_session`):

    - every worker CU that is not passed on is archived as a `note` with the span of the segment it read;
    - the manager receives the last CU plus the archived notes the controller ranks best for the question
      (a summary: for `SUMMARY_RECALL_QUERY`), as many as fit the room its budget leaves: prompt tokens +
      answer cap never exceed the window;
    - each question and answer is archived (kinds `question` and `answer`), a summary as `summary`.

    The rule for a question (`ask`), shown in `Result.extras["answered_from"]` and `["reason"]`:

    1. no note of the document in memory yet -> a chain pass reads the document ("chain");
    2. else the controller's activation gate (`activation`: "always" by default, since every question to a
       Reader is about its document; "llm" asks the model; "never") and retrieval activate the top-k notes
       (`top_k`); the model answers from them in one call, told to reply exactly INSUFFICIENT when they do
       not hold the answer;
    3. if the reply is judged insufficient (`judged_insufficient`), or nothing was activated, a fresh chain pass
       runs with the question ("chain", and its calls include the attempt); otherwise the answer stands
       ("memory": no segment is read again, `Result.segments` is 0 and the citations are the spans of the notes
       the answer was given from).

    Without memory (the default) nothing of this happens: every question is one chain pass.
    `controller_options` go to `MemoryController` (budget, summary_threshold, prompts, ...).
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
        memory: MemoryStream | str | Path | None = None,
        session: str | None = None,
        embedder: Embedder | None = None,
        activation: Literal["llm", "always", "never"] = "always",
        top_k: int = 5,
        retrieval: RetrievalConfig | None = None,
        controller_options: Mapping[str, Any] | None = None,
    ):
        self.document = as_document(source)
        self.model = get_model(model, kv=kv)
        self.window = window or default_window(self.model)
        self.prompts = prompts or DEFAULT_PROMPTS
        self.checkpointer = checkpointer
        self.hooks = hooks
        self._segments: dict[int, list[Segment]] = {}
        self._document_id = _fingerprint(self.document.text)
        self.memory: MemoryStream | None = None
        self.controller: MemoryController | None = None
        self.session = session or default_session(self.document)
        self._owns_memory = False
        self._answer_graph: Any = None
        if memory is not None:
            self._open_memory(memory, embedder, activation, top_k, retrieval, dict(controller_options or {}))

    def _open_memory(self, memory, embedder, activation, top_k, retrieval, options) -> None:
        from .memory import MemoryController, MemoryStream, RetrievalConfig

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
        return plan_budget(self.model, self.prompts, mode, question, self.window)

    def segments(self, budget: int) -> list[Segment]:
        if budget not in self._segments:
            self._segments[budget] = segment_text(self.document.text, self.model.tokenizer, budget)
        return self._segments[budget]

    def thread_id(self, mode: Mode, question: str | None) -> str:
        """Same document, question, model and settings -> same thread, so an interrupted run resumes."""
        kv = getattr(self.model, "kv", "")
        return f"coa-{self._document_id}-" + _fingerprint(mode, question, self.model.name, kv, self.window, self.prompts)

    def _prepare(self, mode: Mode, question: str | None, recalled: list[Any]):
        if mode == "query" and not (question and question.strip()):
            raise ValueError("a question is needed (use summarize() for a summary)")
        budget = self.budget(mode, question)
        segments = self.segments(budget.segment_tokens)
        worker = Worker(self.model, self.prompts, mode, question, budget)
        manager = Manager(self.model, self.prompts, mode, question, budget)
        hooks = self._memory_hooks(manager, recalled) if self.memory is not None else self.hooks
        graph = build_chain_graph(segments, worker, manager, checkpointer=self.checkpointer, hooks=hooks)
        return budget, segments, graph

    # -- runs -----------------------------------------------------------------------------------------------------
    def ask(self, question: str, *, on_event: EventHandler | None = None) -> Result:
        """The answer; with memory, from memory first (see the class docstring for the rule)."""
        if self.memory is None:
            return self._run("query", question, on_event)
        return self._answer_from_graph(self._memory_graph(on_event).invoke({"question": question}))

    def summarize(self, *, on_event: EventHandler | None = None) -> Result:
        result = self._run("summary", None, on_event)
        return self._remember_summary(result)

    async def aask(self, question: str, *, on_event: EventHandler | None = None) -> Result:
        if self.memory is None:
            return await self._arun("query", question, on_event)
        return self._answer_from_graph(await self._memory_graph(on_event).ainvoke({"question": question}))

    async def asummarize(self, *, on_event: EventHandler | None = None) -> Result:
        return self._remember_summary(await self._arun("summary", None, on_event))

    def read(self, question: str, *, on_event: EventHandler | None = None) -> Result:
        """One chain pass over the whole document for the question, whatever memory holds (notes are archived)."""
        return self._run("query", question, on_event)

    def _run(self, mode: Mode, question: str | None, on_event: EventHandler | None) -> Result:
        recalled: list[Any] = []
        budget, segments, graph = self._prepare(mode, question, recalled)
        final: dict[str, Any] = {}
        for kind, chunk in stream_chain(graph, self.thread_id(mode, question), len(segments)):
            final = self._handle(kind, chunk, len(segments), on_event) or final
        return self._result(mode, question, budget, segments, final, recalled)

    async def _arun(self, mode: Mode, question: str | None, on_event: EventHandler | None) -> Result:
        recalled: list[Any] = []
        budget, segments, graph = self._prepare(mode, question, recalled)
        final: dict[str, Any] = {}
        async for kind, chunk in astream_chain(graph, self.thread_id(mode, question), len(segments)):
            final = self._handle(kind, chunk, len(segments), on_event) or final
        return self._result(mode, question, budget, segments, final, recalled)

    def _handle(self, kind: str, chunk: dict, total: int, on_event: EventHandler | None) -> dict | None:
        if kind == "final":
            return chunk
        if on_event:
            for node, update in chunk.items():
                for record in (update or {}).get("calls", []):
                    call = CallRecord(**record)
                    on_event(ChainEvent(node, call.segment, total, call, self.document.source))  # type: ignore[arg-type]
        return None

    def _result(self, mode: Mode, question: str | None, budget: Budget, segments: list[Segment], final: dict,
                recalled: Sequence[Any] = ()) -> Result:
        notes = CommunicationUnit.from_dict(final.get("notes", {}))
        citations = [Citation(i, segments[i].start, segments[i].end) for i in notes.evidence if i < len(segments)]
        extras: dict[str, Any] = {}
        if self.memory is not None:
            # The notes recalled for the manager are evidence too.
            citations = citations_of([*citations, *(span for item in recalled for span in item.spans)])
            extras = {"recalled": [item.id for item in recalled], "session": self.session}
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
            extras=extras,
        )

    # -- memory: the chain's hooks ----------------------------------------------------------------------------------
    def _memory_hooks(self, manager: Manager, recalled: list[Any]) -> ChainHooks:
        user = self.hooks or ChainHooks()

        def archive(segment: Segment, notes: CommunicationUnit, passed_on: bool) -> None:
            if user.archive:
                user.archive(segment, notes, passed_on)
            if not passed_on and notes.text.strip():
                span = {"segment": segment.index, "start": segment.start, "end": segment.end}
                self.memory.add(self.session, "note", notes.text, spans=[span])  # type: ignore[union-attr]

        def recall(notes: CommunicationUnit) -> list[str]:
            extra = list(user.recall(notes)) if user.recall else []
            return extra + self.recall_for_manager(manager, notes, extra, recalled)

        return ChainHooks(archive=archive, recall=recall)

    def recall_for_manager(self, manager: Manager, notes: CommunicationUnit, extra: Sequence[str] = (),
                           recalled: list[Any] | None = None) -> list[str]:
        """Archived notes for the manager, best first, as many as fit beside the last CU (`notes`) and `extra`:
        each is added only if the manager's whole prompt + its answer cap still fit the window."""
        from .memory import rank

        assert self.memory is not None and self.controller is not None
        memory, controller = self.memory, self.controller
        query = manager.question if manager.mode == "query" and manager.question else SUMMARY_RECALL_QUERY
        flash = memory.flash(self.session)
        # The last CU is the latest note (passed-on workers archive nothing): do not give it twice. Earlier
        # questions and answers stay out: the chain reads the document, and an answer memory could not give
        # is no evidence.
        exclude = [i.id for i in memory.items(self.session, kinds=("question", "answer", "turn"))]
        if flash is not None and flash.text == notes.text:
            exclude.append(flash.id)
        scored = rank(memory, self.session, query, k=controller.top_k, config=controller.retrieval, exclude=exclude)
        summaries = {item.id: item.summary or controller.summarize(item) for item in controller.to_summarize(scored)}
        chosen: list[str] = []
        chosen_items = []
        limit = min(self.window, self.model.context_window)
        for s in scored:
            text = summaries.get(s.item.id, s.item.text)
            if text.strip() == notes.text.strip() or not text.strip():
                continue
            if s.item.kind == "summary":
                candidate = RECALLED_SUMMARY.format(text=text)
            else:
                candidate = RECALLED_NOTE.format(part=s.item.spans[0].segment + 1 if s.item.spans else "?", text=text)
            trial = [*extra, *chosen, candidate]
            if self.model.count_prompt_tokens(manager.messages(notes, trial)) + manager.budget.answer_tokens <= limit:
                chosen.append(candidate)
                chosen_items.append(s.item)
        if manager.mode == "summary":  # the manager reads the story in order
            order = sorted(range(len(chosen)), key=lambda i: [sp.segment for sp in chosen_items[i].spans] or [0])
            chosen, chosen_items = [chosen[i] for i in order], [chosen_items[i] for i in order]
        memory.touch(item.id for item in chosen_items)
        if recalled is not None:
            recalled.extend(chosen_items)
        return chosen

    # -- memory: the steps of answering from memory (the nodes of workflows/chat.py call these) ---------------------
    def has_notes(self) -> bool:
        """Whether memory holds notes of this document's session (a chain pass has read it)."""
        return self.memory is not None and bool(self.memory.items(self.session, kinds=("note",), last=1))

    def needs_memory(self, question: str) -> tuple[bool, list[CallRecord]]:
        """The activation gate: (needed, the calls it made)."""
        controller = self._require_memory()
        first = len(controller.calls)
        needed = controller.needs_memory(question)
        return needed, controller.calls[first:]

    def activate(self, question: str) -> tuple[list[Recalled], list[CallRecord]]:
        """Retrieval and the summary gate: the top-k items for the question (the flash memory left out, since the
        prompt carries it anyway), long ones replaced by their summary when they exceed the budget."""
        from .memory import Recalled

        controller = self._require_memory()
        first = len(controller.calls)
        flash = controller.stream.flash(self.session)
        scored = controller.retrieve(self.session, question, exclude=[flash.id] if flash else [])
        summaries = {item.id: item.summary or controller.summarize(item) for item in controller.to_summarize(scored)}
        recalled = []
        for s in scored:
            if s.item.id in summaries:
                text = summaries[s.item.id]
                recalled.append(Recalled(s.item, text, controller.tokenizer.count(text), True, s))
            else:
                recalled.append(Recalled(s.item, s.item.text, controller.item_tokens(s.item), False, s))
        return recalled, controller.calls[first:]

    def memory_prompt(self, question: str, recalled: Sequence[Recalled]) -> FusedPrompt:
        """SCM's fused prompt [related memory][flash memory][question] with the INSUFFICIENT escape; it fits the
        window with the answer cap (the controller drops and cuts the lowest-ranked memory first)."""
        controller = self._require_memory()
        flash = controller.stream.flash(self.session)
        return controller.build_prompt(
            question, flash, recalled, self.window, self.answer_tokens(question), instructions=MEMORY_ANSWER_SYSTEM
        )

    def answer_tokens(self, question: str) -> int:
        """The answer cap of a question, the same from memory as from the manager of a chain pass."""
        return self.budget("query", question).answer_tokens

    def respond(self, question: str, messages: Sequence[Message]) -> tuple[Completion, CallRecord]:
        """The model's answer from the fused prompt's messages (one call, recorded as the manager's)."""
        cap = self.answer_tokens(question)
        completion = self.model.complete(messages, cap, window=self.window)
        record = CallRecord(
            "manager", None, completion.prompt_tokens, completion.completion_tokens, cap, round(completion.seconds, 6),
            completion.cost_usd, completion.cached_prompt_tokens,
        )
        return completion, record

    def remember(self, question: str, answer: str, citations: Sequence[Citation] = ()) -> None:
        """Archive a question and its answer (the answer with the spans it cites)."""
        memory = self._require_memory().stream
        memory.add(self.session, "question", question)
        if answer.strip():
            memory.add(self.session, "answer", answer.strip(), spans=[c.to_dict() for c in citations])

    def _remember_summary(self, result: Result) -> Result:
        if self.memory is None:
            return result
        if result.text.strip():
            self.memory.add(self.session, "summary", result.text.strip(), spans=[c.to_dict() for c in result.citations])
        extras = {**result.extras, "answered_from": "chain", "reason": "a summary reads the whole document"}
        return _with_extras(result, extras)

    def _require_memory(self) -> MemoryController:
        if self.controller is None:
            raise ValueError("this Reader has no memory: pass memory=PATH (or a MemoryStream)")
        return self.controller

    def _memory_graph(self, on_event: EventHandler | None) -> Any:
        from .workflows.chat import build_chat_graph

        # A graph per event handler is cheap (no model or file is opened); without a handler it is kept.
        if on_event is not None:
            return build_chat_graph(self, on_event=on_event)
        if self._answer_graph is None:
            self._answer_graph = build_chat_graph(self)
        return self._answer_graph

    def _answer_from_graph(self, state: Mapping[str, Any]) -> Result:
        from .workflows.chat import turn_result

        return turn_result(self, state["history"][-1])


def _with_extras(result: Result, extras: dict[str, Any]) -> Result:
    from dataclasses import replace

    return replace(result, extras=extras)


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
