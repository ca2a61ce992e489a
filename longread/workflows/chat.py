"""One Self-Controlled Memory session as a LangGraph graph (Wang et al., arXiv:2304.13343, Fig. 1).

    acquire -> activate -> retrieve -> fuse -> respond -> write_back
       |          |           |                   |
       |          +-> fuse    +-> read            +-> read -> write_back
       +-> read (no notes yet)

- **acquire** takes the user's turn and checks that memory holds notes of the document (else: read);
- **activate** is SCM's activation gate: does this turn need archived memory? (no: fuse with flash memory only);
- **retrieve** ranks archived memory (recency + relevance + keyword) and applies the summary gate;
- **fuse** builds [related memory][flash memory][question] within the window, with the INSUFFICIENT escape;
- **respond** is one model call; a reply judged insufficient sends the turn to **read**, a fresh Chain-of-Agents
  pass over the document with the question (its notes are archived, and recalled for its manager);
- **write_back** archives the question and answer in the memory stream and appends the turn to the history.

The nodes are thin methods of `ChatGraph`: each calls one step of a `ChatSteps` (the memory policy lives in
memory/reading.py and the controller; `Reader.chat_steps()` builds one, and the rule is documented on Reader). The
checkpointer is passed in (SqliteSaver per session in the CLI) and the thread id is the session, so reopening a
session restores its turn history; the memory stream restores its memory. Node names and state keys are the
checkpoint's format: a session saved by an earlier version reopens only if they stay as they are.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Sequence, TypedDict

from langgraph.graph import END, START, StateGraph

from ..backends.base import Completion, Message
from ..results import CallRecord, Citation, Result, unique_citations

if TYPE_CHECKING:
    from ..memory.reading import ReadingMemory

PREVIEW_CHARS = 240


class ActivatedItem(TypedDict):
    """An archived item the turn activated, as the checkpoint keeps it (JSON-able)."""

    id: int
    kind: str
    text: str  # the text that went into the prompt (the summary where the summary gate chose it)
    tokens: int
    summarized: bool
    score: float
    relevance: float
    recency: float
    keyword: float
    spans: list[dict[str, int]]


class Turn(TypedDict):
    question: str
    answer: str
    answered_from: Literal["memory", "chain"]
    reason: str
    citations: list[dict[str, int]]
    activated: list[ActivatedItem]  # text cut to PREVIEW_CHARS in the history
    used: list[int]  # ids of the activated items the answer prompt kept
    recalled: list[int]  # ids of the archived notes a chain pass recalled for its manager
    calls: list[dict[str, Any]]
    segments: int  # segments read for this turn (0 when memory answered)
    document_tokens: int
    notes: str


class ChatState(TypedDict, total=False):
    history: Annotated[list[Turn], operator.add]  # every finished turn of the session
    # The turn under way (reset by acquire):
    question: str
    has_notes: bool
    needed: bool
    activated: list[ActivatedItem]
    prompt: list[dict[str, str]]
    used: list[int]
    recalled: list[int]
    reply: str
    sufficient: bool
    reason: str
    answered_from: Literal["memory", "chain"]
    citations: list[dict[str, int]]
    calls: list[dict[str, Any]]
    segments: int
    document_tokens: int
    notes: str


def chat_config(session: str) -> dict[str, Any]:
    """The run config of a session: its thread is the session name."""
    return {"configurable": {"thread_id": session}}


def _calls(state: ChatState, records: list[CallRecord]) -> list[dict[str, Any]]:
    return [*state.get("calls", []), *(r.to_dict() for r in records)]


def _activated_item(recalled: Any) -> ActivatedItem:
    s = recalled.scored
    return ActivatedItem(
        id=recalled.item.id, kind=recalled.item.kind, text=recalled.text, tokens=recalled.tokens,
        summarized=recalled.summarized, score=round(s.score, 4) if s else 0.0,
        relevance=round(s.relevance, 4) if s else 0.0, recency=round(s.recency, 4) if s else 0.0,
        keyword=round(s.keyword, 4) if s else 0.0, spans=[sp.to_dict() for sp in recalled.item.spans],
    )


# -- routers --------------------------------------------------------------------------------------------------------
def after_acquire(state: ChatState) -> Literal["activate", "read"]:
    return "activate" if state["has_notes"] else "read"


def after_activate(state: ChatState) -> Literal["retrieve", "fuse"]:
    return "retrieve" if state["needed"] else "fuse"


def after_retrieve(state: ChatState) -> Literal["fuse", "read"]:
    return "fuse" if state["activated"] else "read"


def after_respond(state: ChatState) -> Literal["write_back", "read"]:
    return "write_back" if state["sufficient"] else "read"


@dataclass
class ChatSteps:
    """What a session's nodes call: the memory of the document, one answer call, and a fresh read."""

    memory: "ReadingMemory"
    window: int
    answer_tokens: Callable[[str], int]  # the answer cap of a question
    respond: Callable[[str, Sequence[Message]], tuple[Completion, CallRecord]]  # one call from the fused prompt
    read: Callable[[str], Result]  # a fresh pass over the document with the question (the reader's strategy)


def build_chat_graph(source: Any, *, checkpointer: Any = None, on_event: Any = None):
    """The compiled session graph over ChatSteps, or over a Reader with memory (its `chat_steps`). `on_event`
    sees the calls of a fallback read."""
    steps: ChatSteps = source.chat_steps(on_event=on_event) if hasattr(source, "chat_steps") else source
    return ChatGraph(steps).build(checkpointer)


@dataclass
class ChatGraph:
    """The session's nodes, one method each, over what they share (the `ChatSteps`); `build` wires them."""

    steps: ChatSteps

    @property
    def memory(self) -> "ReadingMemory":
        return self.steps.memory

    def build(self, checkpointer: Any = None) -> Any:
        """The compiled graph. The checkpointer is passed in (SqliteSaver per session in the CLI)."""
        graph = StateGraph(ChatState)
        for name, node in (("acquire", self.acquire), ("activate", self.activate), ("retrieve", self.retrieve),
                           ("fuse", self.fuse), ("respond", self.respond), ("read", self.read),
                           ("write_back", self.write_back)):
            graph.add_node(name, node)
        graph.add_edge(START, "acquire")
        graph.add_conditional_edges("acquire", after_acquire, ["activate", "read"])
        graph.add_conditional_edges("activate", after_activate, ["retrieve", "fuse"])
        graph.add_conditional_edges("retrieve", after_retrieve, ["fuse", "read"])
        graph.add_edge("fuse", "respond")
        graph.add_conditional_edges("respond", after_respond, ["write_back", "read"])
        graph.add_edge("read", "write_back")
        graph.add_edge("write_back", END)
        return graph.compile(checkpointer=checkpointer)

    def acquire(self, state: ChatState) -> ChatState:
        """Takes the user's turn (resetting the turn's keys) and checks that memory holds notes of the document."""
        question = (state.get("question") or "").strip()
        if not question:
            raise ValueError("the question is empty")
        has_notes = self.memory.has_notes()
        return {
            "question": question, "has_notes": has_notes, "needed": False, "activated": [], "prompt": [], "used": [],
            "recalled": [], "reply": "", "sufficient": False, "answered_from": "memory", "citations": [], "calls": [],
            "segments": 0, "document_tokens": 0, "notes": "",
            "reason": "" if has_notes else "memory holds no notes of the document yet",
        }

    def activate(self, state: ChatState) -> ChatState:
        """SCM's activation gate: does this turn need archived memory?"""
        needed, calls = self.memory.needs_memory(state["question"])
        update: ChatState = {"needed": needed, "calls": _calls(state, calls)}
        if not needed:
            update["reason"] = "the activation gate judged archived memory not needed"
        return update

    def retrieve(self, state: ChatState) -> ChatState:
        """Ranks archived memory for the question (recency + relevance + keyword), with the summary gate."""
        recalled, calls = self.memory.activate(state["question"])
        update: ChatState = {"activated": [_activated_item(r) for r in recalled], "calls": _calls(state, calls)}
        if not recalled:
            update["reason"] = "no archived memory matched the question"
        return update

    def fuse(self, state: ChatState) -> ChatState:
        """The answer prompt, [related memory][flash memory][question], within the window."""
        from ..memory import Recalled

        items = {item.id: item for item in self.memory.stream.get_many([a["id"] for a in state["activated"]])}
        recalled = [
            Recalled(items[a["id"]], a["text"], a["tokens"], a["summarized"])
            for a in state["activated"]
            if a["id"] in items
        ]
        question = state["question"]
        prompt = self.memory.prompt(question, recalled, self.steps.window, self.steps.answer_tokens(question))
        return {"prompt": [dict(m) for m in prompt.messages], "used": [r.item.id for r in prompt.kept]}

    def respond(self, state: ChatState) -> ChatState:
        """One model call from the fused prompt; a reply that says memory was insufficient sends the turn to read."""
        completion, record = self.steps.respond(state["question"], state["prompt"])  # type: ignore[arg-type]
        reply = completion.text.strip()
        sufficient = not self.memory.insufficient(reply)
        used = set(state["used"])
        spans = [Citation(**sp) for a in state["activated"] if a["id"] in used for sp in a["spans"]]
        return {
            "reply": reply, "sufficient": sufficient, "reason": _respond_reason(state, reply, sufficient, len(used)),
            "calls": _calls(state, [record]), "citations": [c.to_dict() for c in unique_citations(spans)],
        }

    def read(self, state: ChatState) -> ChatState:
        """A fresh pass over the document with the question (the reader's strategy)."""
        result = self.steps.read(state["question"])
        return {
            "reply": result.text.strip(), "answered_from": "chain",
            "reason": f"{state['reason']}: a chain pass read the document",
            "calls": _calls(state, result.calls), "citations": [c.to_dict() for c in result.citations],
            "segments": result.segments, "document_tokens": result.document_tokens, "notes": result.notes,
            "recalled": list(result.extras.get("recalled", [])),
        }

    def write_back(self, state: ChatState) -> ChatState:
        """Archives the question and answer in the memory stream and appends the turn to the history."""
        citations = [Citation(**c) for c in state["citations"]]
        self.memory.remember(state["question"], state["reply"], citations)
        turn = Turn(
            question=state["question"], answer=state["reply"], answered_from=state["answered_from"],
            reason=state["reason"], citations=state["citations"],
            activated=[ActivatedItem(**{**a, "text": a["text"][:PREVIEW_CHARS]}) for a in state["activated"]],
            used=state["used"], recalled=state["recalled"], calls=state["calls"], segments=state["segments"],
            document_tokens=state["document_tokens"], notes=state["notes"],
        )
        return {"history": [turn]}


def _respond_reason(state: ChatState, reply: str, sufficient: bool, used: int) -> str:
    """Why the turn was answered from memory, or why memory was not enough."""
    if sufficient and not state["needed"]:
        return f"{state['reason']}: answered from the most recent memory alone"
    if sufficient:
        return f"the {used} activated item(s) in the prompt held the answer; no segment was read again"
    if state["needed"]:
        return f"memory judged insufficient: the reply from {used} activated item(s) was {reply[:60]!r}"
    return f"{state['reason']}, and the reply without it was {reply[:60]!r}"


def history(graph: Any, session: str) -> list[Turn]:
    """The finished turns of a session, as its checkpointer restored them (empty for a new session)."""
    if graph.checkpointer is None:
        return []
    return list(graph.get_state(chat_config(session)).values.get("history", []))
