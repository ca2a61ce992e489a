"""Chain-of-Agents as a LangGraph StateGraph: a worker node that loops over the segments, then a manager node.

Each worker step is one super-step, so with a checkpointer a run killed at segment 40 of 60 resumes at 40.
The segments stay out of the state (they are bound into the nodes): a checkpoint then holds only the position,
the notes and the call records (each with the model's reply), not the book. `order` gives the reading order
(multipath reads the same segments in several orders); the records name the segment actually read.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, Sequence, TypedDict

from langgraph.graph import END, START, StateGraph

from ..agents import CommunicationUnit, Manager, Worker, WorkerStep
from ..backends.base import Completion
from ..backends.calls import Steps
from ..results import Agent, CallRecord
from ..segmenting import Segment
from .hooks import ChainHooks
from .runs import steps_node


class ChainState(TypedDict, total=False):
    next_segment: int  # position in the reading order
    notes: dict[str, Any]  # CommunicationUnit.to_dict()
    calls: Annotated[list[dict[str, Any]], operator.add]
    output: str
    not_found: bool  # every worker found nothing: the answer says so without a manager call
    lookback: list[int]  # segments whose source text the manager read


def after_worker(state: ChainState, total: int) -> Literal["worker", "manager"]:
    return "worker" if state["next_segment"] < total else "manager"


def build_chain_graph(
    segments: Sequence[Segment],
    worker: Worker,
    manager: Manager,
    *,
    checkpointer: Any = None,
    hooks: ChainHooks | None = None,
    order: Sequence[int] | None = None,
    path: int | None = None,
):
    """The compiled graph. The checkpointer is passed in (SqliteSaver in the CLI), never created here."""
    hooks = hooks or ChainHooks()
    order = list(range(len(segments))) if order is None else list(order)
    total = len(order)

    def started(agent: Agent, segment: int | None) -> None:
        if hooks.started:
            hooks.started(agent, segment)

    def worker_update(position: int, step: WorkerStep) -> ChainState:
        segment = segments[order[position]]
        if hooks.archive:
            hooks.archive(segment, step.notes, step.passed_on)
        record = CallRecord.of("worker", segment.index, step.completion, worker.budget.notes_tokens,
                               passed_on=step.passed_on, path=path)
        if hooks.finished:
            hooks.finished(record)
        return {"next_segment": position + 1, "notes": step.notes.to_dict(), "calls": [record.to_dict()]}

    def read_segment(state: ChainState) -> Steps[ChainState]:
        position = state["next_segment"]
        segment = segments[order[position]]
        started("worker", segment.index)
        step = yield from worker.reading(segment, CommunicationUnit.from_dict(state["notes"]), path)
        return worker_update(position, step)

    def manager_inputs(state: ChainState) -> tuple[CommunicationUnit, Sequence[str], str, list[int]]:
        notes = CommunicationUnit.from_dict(state["notes"])
        extra = list(hooks.recall(notes)) if hooks.recall else []
        sources, looked = hooks.lookback(notes, extra) if hooks.lookback else ("", [])
        return notes, extra, sources, looked

    def answered(completion: Completion, looked: list[int]) -> ChainState:
        record = CallRecord.of("manager", None, completion, manager.budget.answer_tokens, path=path)
        if hooks.finished:
            hooks.finished(record)
        return {"output": completion.text, "calls": [record.to_dict()], "not_found": False, "lookback": looked}

    def not_found() -> ChainState:
        answer = manager.not_found(total)
        if hooks.on_text:
            hooks.on_text(answer)
        return {"output": answer, "calls": [], "not_found": True, "lookback": []}

    def write_answer(state: ChainState) -> Steps[ChainState]:
        notes, extra, sources, looked = manager_inputs(state)
        if manager.nothing_to_read(notes, extra, sources):
            return not_found()
        started("manager", None)
        completion = yield from manager.writing(notes, extra, sources, path=path, on_text=hooks.on_text)
        return answered(completion, looked)

    def route(state: ChainState) -> Literal["worker", "manager"]:
        return after_worker(state, total)

    graph = StateGraph(ChainState)
    # Each node's body is written once and runs under `invoke` and `ainvoke` alike (runs.steps_node).
    graph.add_node("worker", steps_node(read_segment, "worker"))
    graph.add_node("manager", steps_node(write_answer, "manager"))
    graph.add_conditional_edges(START, route, ["worker", "manager"])
    graph.add_conditional_edges("worker", route, ["worker", "manager"])
    graph.add_edge("manager", END)
    return graph.compile(checkpointer=checkpointer)


def initial_state() -> ChainState:
    return {"next_segment": 0, "notes": CommunicationUnit().to_dict(), "calls": [], "output": "", "not_found": False,
            "lookback": []}
