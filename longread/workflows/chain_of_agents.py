"""Chain-of-Agents as a LangGraph StateGraph: a worker node that loops over the segments, then a manager node.

Each worker step is one super-step, so with a checkpointer a run killed at segment 40 of 60 resumes at 40.
The segments stay out of the state (they are bound into the nodes): a checkpoint then holds only the position,
the notes and the call records, not the book.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterator, Literal, Sequence, TypedDict

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph

from ..agents import CommunicationUnit, Manager, Worker, WorkerStep
from ..backends.base import Completion
from ..results import CallRecord
from ..segmenting import Segment


class ChainState(TypedDict, total=False):
    next_segment: int
    notes: dict[str, Any]  # CommunicationUnit.to_dict()
    calls: Annotated[list[dict[str, Any]], operator.add]
    output: str


@dataclass
class ChainHooks:
    """Optional callbacks: the memory stream archives each CU and recalls archived notes for the manager."""

    archive: Callable[[Segment, CommunicationUnit, bool], None] | None = None
    recall: Callable[[CommunicationUnit], Sequence[str]] | None = None


def _record(agent: str, segment: int | None, completion: Completion, max_new: int, passed_on: bool = False) -> dict:
    return CallRecord(
        agent=agent,  # type: ignore[arg-type]
        segment=segment,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        max_new_tokens=max_new,
        seconds=round(completion.seconds, 6),
        cost_usd=completion.cost_usd,
        cached_prompt_tokens=completion.cached_prompt_tokens,
        passed_on=passed_on,
    ).to_dict()


def after_worker(state: ChainState, total: int) -> Literal["worker", "manager"]:
    return "worker" if state["next_segment"] < total else "manager"


def build_chain_graph(
    segments: Sequence[Segment],
    worker: Worker,
    manager: Manager,
    *,
    checkpointer: Any = None,
    hooks: ChainHooks | None = None,
):
    """The compiled graph. The checkpointer is passed in (SqliteSaver in the CLI), never created here."""
    hooks = hooks or ChainHooks()
    total = len(segments)

    def worker_update(index: int, step: WorkerStep) -> ChainState:
        if hooks.archive:
            hooks.archive(segments[index], step.notes, step.passed_on)
        record = _record("worker", index, step.completion, worker.budget.notes_tokens, step.passed_on)
        return {"next_segment": index + 1, "notes": step.notes.to_dict(), "calls": [record]}

    def read_segment(state: ChainState) -> ChainState:
        index = state["next_segment"]
        return worker_update(index, worker.read(segments[index], CommunicationUnit.from_dict(state["notes"])))

    async def aread_segment(state: ChainState) -> ChainState:
        index = state["next_segment"]
        return worker_update(index, await worker.aread(segments[index], CommunicationUnit.from_dict(state["notes"])))

    def manager_inputs(state: ChainState) -> tuple[CommunicationUnit, Sequence[str]]:
        notes = CommunicationUnit.from_dict(state["notes"])
        return notes, (hooks.recall(notes) if hooks.recall else ())

    def write_answer(state: ChainState) -> ChainState:
        completion = manager.write(*manager_inputs(state))
        return {"output": completion.text, "calls": [_record("manager", None, completion, manager.budget.answer_tokens)]}

    async def awrite_answer(state: ChainState) -> ChainState:
        completion = await manager.awrite(*manager_inputs(state))
        return {"output": completion.text, "calls": [_record("manager", None, completion, manager.budget.answer_tokens)]}

    def route(state: ChainState) -> Literal["worker", "manager"]:
        return after_worker(state, total)

    graph = StateGraph(ChainState)
    # Each node has a sync and an async body, so the same graph serves `invoke` and `ainvoke`.
    graph.add_node("worker", RunnableLambda(read_segment, afunc=aread_segment, name="worker"))
    graph.add_node("manager", RunnableLambda(write_answer, afunc=awrite_answer, name="manager"))
    graph.add_conditional_edges(START, route, ["worker", "manager"])
    graph.add_conditional_edges("worker", route, ["worker", "manager"])
    graph.add_edge("manager", END)
    return graph.compile(checkpointer=checkpointer)


def initial_state() -> ChainState:
    return {"next_segment": 0, "notes": CommunicationUnit().to_dict(), "calls": [], "output": ""}


def run_config(thread_id: str, segments: int) -> dict[str, Any]:
    # One super-step per worker plus the manager; LangGraph's default limit of 25 would stop any book.
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": segments + 10}


def _start_input(graph: Any, config: dict[str, Any]) -> ChainState | None:
    """None to resume an interrupted run of this thread; a fresh state otherwise (a finished run is cleared)."""
    if graph.checkpointer is None:
        return initial_state()
    snapshot = graph.get_state(config)
    if snapshot.next:
        return None
    if snapshot.values:
        graph.checkpointer.delete_thread(config["configurable"]["thread_id"])
    return initial_state()


async def _astart_input(graph: Any, config: dict[str, Any]) -> ChainState | None:
    if graph.checkpointer is None:
        return initial_state()
    snapshot = await graph.aget_state(config)
    if snapshot.next:
        return None
    if snapshot.values:
        await graph.checkpointer.adelete_thread(config["configurable"]["thread_id"])
    return initial_state()


def stream_chain(graph: Any, thread_id: str, segments: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Runs (or resumes) the chain, yielding ("update", {node: update}) per step and finally ("final", state)."""
    config = run_config(thread_id, segments)
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream(_start_input(graph, config), config, stream_mode=["updates", "values"]):
        if mode == "updates":
            yield "update", chunk
        else:
            final = chunk
    yield "final", final


async def astream_chain(graph: Any, thread_id: str, segments: int):
    config = run_config(thread_id, segments)
    final: dict[str, Any] = {}
    start = await _astart_input(graph, config)
    async for mode, chunk in graph.astream(start, config, stream_mode=["updates", "values"]):
        if mode == "updates":
            yield "update", chunk
        else:
            final = chunk
    yield "final", final
