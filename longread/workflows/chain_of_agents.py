"""Chain-of-Agents as a LangGraph StateGraph: a worker node that loops over the segments, then a manager node.

Each worker step is one super-step, so with a checkpointer a run killed at segment 40 of 60 resumes at 40.
The segments stay out of the state (they are bound into the nodes): a checkpoint then holds only the position,
the notes and the call records (each with the model's reply), not the book. `order` gives the reading order
(multipath reads the same segments in several orders); the records name the segment actually read.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Sequence, TypedDict

from langgraph.graph import END, START, StateGraph

from ..agents import CommunicationUnit, Manager, Worker, WorkerStep
from ..backends.base import Completion
from ..backends.calls import Steps
from ..segmenting import Segment
from .hooks import ChainHooks, HookedNodes
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
    order = list(range(len(segments))) if order is None else list(order)
    nodes = ChainGraph(segments, hooks or ChainHooks(), order, path, worker=worker, manager=manager)
    return nodes.build(checkpointer)


@dataclass
class ChainGraph(HookedNodes):
    """What the chain's nodes share (the segments, the agents, the hooks, the reading order); one method per node,
    `build` wires them. Node names and state keys are the checkpoint's format: keep them as they are."""

    worker: Worker
    manager: Manager

    def build(self, checkpointer: Any = None) -> Any:
        graph = StateGraph(ChainState)
        # Each node's body is written once and runs under `invoke` and `ainvoke` alike (runs.steps_node).
        graph.add_node("worker", steps_node(self.read_segment, "worker"))
        graph.add_node("manager", steps_node(self.write_answer, "manager"))
        graph.add_conditional_edges(START, self.route, ["worker", "manager"])
        graph.add_conditional_edges("worker", self.route, ["worker", "manager"])
        graph.add_edge("manager", END)
        return graph.compile(checkpointer=checkpointer)

    def route(self, state: ChainState) -> Literal["worker", "manager"]:
        """After START and each worker: the next segment, or the manager once the order is read."""
        return after_worker(state, self.total)

    # -- the workers -------------------------------------------------------------------------------------------------
    def read_segment(self, state: ChainState) -> Steps[ChainState]:
        """Node `worker`: reads the next segment of the order with the notes so far."""
        position = state["next_segment"]
        segment = self.segments[self.order[position]]
        self.started("worker", segment.index)
        step = yield from self.worker.reading(segment, CommunicationUnit.from_dict(state["notes"]), self.path)
        return self.worker_update(position, step)

    def worker_update(self, position: int, step: WorkerStep) -> ChainState:
        """The worker's notes and call, archived first where memory keeps notes."""
        segment = self.segments[self.order[position]]
        if self.hooks.archive:
            self.hooks.archive(segment, step.notes, step.passed_on)
        record = self.recorded("worker", segment.index, step.completion, self.worker.budget.notes_tokens,
                               passed_on=step.passed_on)
        return {"next_segment": position + 1, "notes": step.notes.to_dict(), "calls": [record]}

    # -- the manager -------------------------------------------------------------------------------------------------
    def write_answer(self, state: ChainState) -> Steps[ChainState]:
        """Node `manager`: the answer from the last notes (with recalled notes and looked-back sources), or "not
        found" without a call when there is nothing to read."""
        notes, extra, sources, looked = self.manager_inputs(state)
        if self.manager.nothing_to_read(notes, extra, sources):
            return self.not_found()
        self.started("manager", None)
        completion = yield from self.manager.writing(notes, extra, sources, path=self.path, on_text=self.hooks.on_text)
        return self.answered(completion, looked)

    def manager_inputs(self, state: ChainState) -> tuple[CommunicationUnit, Sequence[str], str, list[int]]:
        """The last notes, the archived notes recalled beside them, and the looked-back sources (their segments)."""
        notes = CommunicationUnit.from_dict(state["notes"])
        extra = list(self.hooks.recall(notes)) if self.hooks.recall else []
        sources, looked = self.hooks.lookback(notes, extra) if self.hooks.lookback else ("", [])
        return notes, extra, sources, looked

    def answered(self, completion: Completion, looked: list[int]) -> ChainState:
        record = self.recorded("manager", None, completion, self.manager.budget.answer_tokens)
        return {"output": completion.text, "calls": [record], "not_found": False, "lookback": looked}

    def not_found(self) -> ChainState:
        answer = self.manager.not_found(self.total)
        self.shown(answer)
        return {"output": answer, "calls": [], "not_found": True, "lookback": []}


def initial_state() -> ChainState:
    return {"next_segment": 0, "notes": CommunicationUnit().to_dict(), "calls": [], "output": "", "not_found": False,
            "lookback": []}
