"""Running a compiled graph on a checkpoint thread: resume what was interrupted, keep what was finished.

- A thread with pending steps (a run was killed or failed) resumes where it stopped: no finished call is repeated.
- A finished thread is kept and its final state returned without a call: a result that was paid for is not paid
  for again (for example when writing the output failed after the run). `fresh=True` deletes the thread first
  and starts over.
- Without a checkpointer every run starts from the initial state.
- Every step's checkpoint is saved before the next step starts (LangGraph's `durability="sync"`; its default
  saves in the background and reports a failed save only when the run ends): a run that can no longer save, a
  full disk for instance, stops at the first failed save instead of paying for calls it cannot keep.
"""

from __future__ import annotations

from typing import Any, Callable, TypedDict

from ..backends.calls import Steps, Twin, adrive, drive


def run_config(thread_id: str, steps: int, concurrency: int | None = None) -> dict[str, Any]:
    # One super-step per call plus slack; LangGraph's default limit of 25 would stop any book. `concurrency` caps
    # the tasks of one super-step that run at once (a fan-out of independent workers).
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 10}
    if concurrency is not None:
        config["max_concurrency"] = concurrency
    return config


def graph_run(graph: Any, thread_id: str, initial: dict[str, Any], *, steps: int, fresh: bool = False,
              concurrency: int | None = None) -> Steps[tuple[dict[str, Any], bool]]:
    """(final state, whether it was a finished thread's state, reused without a call), written once for `invoke`
    and `ainvoke` (backends/calls.py: `drive` or `adrive` runs it)."""
    config = run_config(thread_id, steps, concurrency)
    start: dict[str, Any] | None = initial
    if graph.checkpointer is not None:
        if fresh:
            yield Twin(graph.checkpointer.delete_thread, graph.checkpointer.adelete_thread, thread_id)
        snapshot = yield Twin(graph.get_state, graph.aget_state, config)
        if _unfinished(snapshot):
            start = None
        elif snapshot.values:
            return dict(snapshot.values), True
    return dict((yield Twin(graph.invoke, graph.ainvoke, start, config, **_durability(graph)))), False


def run_graph(graph: Any, thread_id: str, initial: dict[str, Any], *, steps: int, fresh: bool = False,
              concurrency: int | None = None) -> tuple[dict[str, Any], bool]:
    """`graph_run` with the sync API (a strategy plugin's `run`; the built-ins yield from `graph_run`)."""
    return drive(graph_run(graph, thread_id, initial, steps=steps, fresh=fresh, concurrency=concurrency))


async def arun_graph(graph: Any, thread_id: str, initial: dict[str, Any], *, steps: int, fresh: bool = False,
                     concurrency: int | None = None) -> tuple[dict[str, Any], bool]:
    return await adrive(graph_run(graph, thread_id, initial, steps=steps, fresh=fresh, concurrency=concurrency))


def _unfinished(snapshot: Any) -> bool:
    """A thread with steps left. `next` alone does not say: when a step's writes were saved but the checkpoint after
    it was not (a failed save), the snapshot lists that step's task, done, and no `next`; the run must go on."""
    return bool(snapshot.next or snapshot.tasks)


def _durability(graph: Any) -> dict[str, Any]:
    # Only with a checkpointer: LangGraph 1.2 fails on durability="sync" without one.
    return {"durability": "sync"} if graph.checkpointer is not None else {}


def steps_node(body: Callable[[Any], Steps[Any]], name: str) -> Any:
    """A graph node whose body is written once as steps (backends/calls.py): `invoke` drives it with the sync API
    in LangGraph's thread, `ainvoke` with the async one on the loop."""
    from langchain_core.runnables import RunnableLambda

    async def anode(state: Any) -> Any:
        return await adrive(body(state))

    return RunnableLambda(lambda state: drive(body(state)), afunc=anode, name=name)


def forget(checkpointer: Any, thread_ids: list[str]) -> None:
    """Deletes threads, so their next run starts over."""
    if checkpointer is not None:
        for thread_id in thread_ids:
            checkpointer.delete_thread(thread_id)


# -- one-call graphs ---------------------------------------------------------------------------------------------------
class CallState(TypedDict, total=False):
    output: str
    calls: list[dict[str, Any]]
    extras: dict[str, Any]


def one_call_graph(call: Callable[[], Steps[CallState]], *, checkpointer: Any, name: str = "call") -> Any:
    """A graph of one node that makes one call (`call()`: its steps): what a one-call strategy (or multipath's
    judge) checkpoints, so a finished answer is kept like a finished chain's."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(CallState)
    graph.add_node(name, steps_node(lambda state: call(), name))
    graph.add_edge(START, name)
    graph.add_edge(name, END)
    return graph.compile(checkpointer=checkpointer)
