"""The grounded chain as a LangGraph StateGraph: workers whose replies become checked claims, a collapse stage for
claims that do not fit the manager's window, the manager, and (a summary) one retry for what the document lacks.

    chain form:  START -> worker -> worker -> ... -> gather -> [collapse ...] -> manager -> [fix] -> END
    map form:    START -> Send(read, part) x n (one super-step, run at once) -> gather -> ... the same

Each worker call is its own task, so with a checkpointer a run killed during the reading resumes with the parts it
had read (LangGraph keeps a finished task's writes); each collapse call, the manager and the fix are one super-step
each. The segments stay out of the state; the claims travel as dicts (agents/claims.py).
"""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any, Literal, Sequence, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from .. import grounding
from ..agents.claims import Claim, Dropped, claims_from_dicts, claims_to_dicts, merge_claims, render_claims
from ..agents.grounded import ClaimManager, ClaimStep, ClaimWorker, check_summary, drop_unsupported
from ..agents.notes import CommunicationUnit
from ..backends.base import Completion
from ..backends.calls import Steps
from ..results import Agent, CallRecord
from ..segmenting import Segment
from .hooks import ChainHooks
from .runs import steps_node

MAX_COLLAPSE_ROUNDS = 4
THIN_SUMMARY_WORDS = 30  # a retried summary the checks cut below this (and below half) falls back to its claims


class GroundedState(TypedDict, total=False):
    next_segment: int  # chain form: position in the reading order
    claims: Annotated[list[dict[str, Any]], operator.add]  # every worker's checked claims, as they came
    dropped: Annotated[list[dict[str, Any]], operator.add]  # every claim a check refused, with its reason
    calls: Annotated[list[dict[str, Any]], operator.add]
    stage: list[dict[str, Any]]  # what the manager reads (after collapse rounds)
    pending: list[list[dict[str, Any]]]  # collapse: groups still to merge in this round
    merged: list[dict[str, Any]]  # collapse: what this round merged so far
    rounds: int
    draft: str  # a summary that named what the document lacks, before its retry
    output: str
    not_found: bool
    trace: dict[str, Any]  # the resolution, collapse rounds and summary check, for --trace and JSON
    notes: dict[str, Any]  # CommunicationUnit.to_dict() of what the manager read (multipath's judge, memory)
    lookback: list[int]


def initial_grounded_state() -> GroundedState:
    return {"next_segment": 0, "claims": [], "dropped": [], "calls": [], "output": "", "not_found": False,
            "trace": {}, "lookback": []}


def build_grounded_graph(
    segments: Sequence[Segment],
    worker: ClaimWorker,
    manager: ClaimManager,
    document: str,
    *,
    checkpointer: Any = None,
    hooks: ChainHooks | None = None,
    order: Sequence[int] | None = None,
    path: int | None = None,
):
    """The compiled graph; `worker.shared` picks the chain form (earlier claims shown) or the map form."""
    hooks = hooks or ChainHooks()
    order = list(range(len(segments))) if order is None else list(order)
    total = len(order)
    @functools.cache
    def folded() -> grounding.Folded:  # the document folded on first need (a summary's check), once
        return grounding.fold(document)

    def started(agent: Agent, segment: int | None) -> None:
        if hooks.started:
            hooks.started(agent, segment)

    def recorded(agent: Agent, segment: int | None, completion: Completion, cap: int, **kw: Any) -> dict[str, Any]:
        record = CallRecord.of(agent, segment, completion, cap, path=path, **kw)
        if hooks.finished:
            hooks.finished(record)
        return record.to_dict()

    # -- reading ---------------------------------------------------------------------------------------------------
    def so_far(state: GroundedState) -> list[Claim]:
        return merge_claims([], claims_from_dicts(state.get("claims", [])))

    def worker_update(segment: Segment, step: ClaimStep) -> GroundedState:
        if hooks.archive:
            text = render_claims(step.kept, numbered=False, source=False)
            hooks.archive(segment, CommunicationUnit(text, (segment.index,)), not step.kept)
        record = recorded("worker", segment.index, step.completion, worker.budget.notes_tokens, passed_on=not step.kept)
        return {"claims": claims_to_dicts(step.kept), "dropped": [d.to_dict() for d in step.dropped],
                "calls": [record]}

    def read_next(state: GroundedState) -> Steps[GroundedState]:
        position = state["next_segment"]
        segment = segments[order[position]]
        started("worker", segment.index)
        step = yield from worker.reading(segment, so_far(state), path)
        return {**worker_update(segment, step), "next_segment": position + 1}

    def read_part(task: dict[str, Any]) -> Steps[GroundedState]:
        segment = segments[task["segment"]]
        started("worker", segment.index)
        return worker_update(segment, (yield from worker.reading(segment, (), path)))

    def fan_out(state: GroundedState) -> list[Send] | str:
        if not order:
            return "gather"
        return [Send("read", {"segment": i}) for i in order]

    def next_after_worker(state: GroundedState) -> Literal["worker", "gather"]:
        return "worker" if state.get("next_segment", 0) < total else "gather"

    # -- gathering and collapsing ------------------------------------------------------------------------------------
    def manager_fits(claims: Sequence[Claim]) -> bool:
        return manager.fitting(claims) is not None

    def gather(state: GroundedState) -> GroundedState:
        claims = sorted(so_far(state), key=lambda c: (c.part, c.spans[:1]))
        if not claims or manager.items_kind or manager_fits(claims):  # code lists items: no window to fit
            return {"stage": claims_to_dicts(claims), "pending": [], "merged": [], "rounds": 0}
        groups = manager.groups(claims)
        return {"stage": claims_to_dicts(claims), "pending": [claims_to_dicts(g) for g in groups], "merged": [],
                "rounds": 1}

    def collapse_update(state: GroundedState, completion: Completion) -> GroundedState:
        group = claims_from_dicts(state["pending"][0])
        items, dropped = manager.collapsed(group, completion.text)
        record = recorded("manager", None, completion, manager.collapse_tokens)
        merged = [*claims_from_dicts(state.get("merged", [])), *items]
        rest = state["pending"][1:]
        update: GroundedState = {"calls": [record], "dropped": [d.to_dict() for d in dropped]}
        if rest:
            return {**update, "pending": rest, "merged": claims_to_dicts(merged)}
        rounds = state.get("rounds", 1)
        before = len(claims_from_dicts(state.get("stage", [])))
        trace = {**state.get("trace", {}), "collapse_rounds": rounds}
        if manager_fits(merged) or rounds >= MAX_COLLAPSE_ROUNDS or len(merged) >= before:
            return {**update, "pending": [], "merged": [], "stage": claims_to_dicts(merged), "trace": trace}
        groups = manager.groups(merged)
        return {**update, "pending": [claims_to_dicts(g) for g in groups], "merged": [],
                "stage": claims_to_dicts(merged), "rounds": rounds + 1, "trace": trace}

    def collapse(state: GroundedState) -> Steps[GroundedState]:
        started("manager", None)
        return collapse_update(state, (yield from manager.collapsing(claims_from_dicts(state["pending"][0]), path)))

    def next_after_collapse(state: GroundedState) -> Literal["collapse", "manager"]:
        return "collapse" if state.get("pending") else "manager"

    # -- the manager -------------------------------------------------------------------------------------------------
    def manager_inputs(state: GroundedState) -> tuple[Any, list[str], str, list[int], dict[str, Any]]:
        claims = claims_from_dicts(state.get("stage", []))
        prepared = manager.fitting(claims) or manager.prepare(claims, compact=True, bridged=False)
        trace = dict(state.get("trace", {}))
        cut = 0
        while prepared.claims and not manager.fits(prepared.notes):
            # still too much after the collapse rounds: the least relevant go (a question), the last (a summary)
            claims = prepared.claims[:-1]
            prepared = manager.prepare(claims, compact=True, bridged=False)
            cut += 1
        if cut:
            trace["cut_to_fit"] = cut
        if prepared.resolution is not None:
            trace.update(prepared.resolution.trace())
            followed = [c.text for c in prepared.claims if c.origin == "followed"]
            if followed:
                trace["bridged"] = followed
        evidence = tuple(sorted({p for c in prepared.claims for p in c.cited_parts}))
        notes = CommunicationUnit(prepared.notes if prepared.claims else "", evidence)
        extra = list(hooks.recall(notes)) if hooks.recall else []
        sources, looked = hooks.lookback(notes, extra) if hooks.lookback else ("", [])
        trace["shown"] = claims_to_dicts(prepared.claims)
        return prepared, extra, sources, looked, trace

    def not_found(trace: dict[str, Any]) -> GroundedState:
        answer = manager.not_found(total) if manager.mode == "query" else manager.prompts.nothing_to_summarize.format(
            parts=total)
        if hooks.on_text:
            hooks.on_text(answer)
        return {"output": answer, "calls": [], "not_found": True, "lookback": [], "trace": trace,
                "notes": CommunicationUnit().to_dict()}

    def answered(prepared: Any, completion: Completion, looked: list[int], trace: dict[str, Any]) -> GroundedState:
        record = recorded("manager", None, completion, manager.budget.answer_tokens)
        evidence = tuple(sorted({p for c in prepared.claims for p in c.cited_parts}))
        update: GroundedState = {"calls": [record], "not_found": False, "lookback": looked,
                                 "notes": CommunicationUnit(prepared.notes, evidence).to_dict()}
        if manager.mode == "summary":
            check = check_summary(completion.text, folded())
            trace["summary_check"] = check.to_dict()
            if check.unsupported or getattr(manager.model, "upper_bound", False):  # a dry run counts the retry
                return {**update, "draft": check.text, "trace": trace}
            if hooks.on_text:
                hooks.on_text(check.text)
            return {**update, "output": check.text, "trace": trace}
        return {**update, "output": completion.text, "trace": trace}

    def stream() -> Any:
        # a summary is checked before anyone sees it, so it is not streamed as it is written
        return hooks.on_text if manager.mode == "query" else None

    def nothing(prepared: Any, extra: Sequence[str], sources: str) -> bool:
        if getattr(manager.model, "upper_bound", False):
            return False
        return not prepared.claims and not extra and not sources.strip()

    def listed(state: GroundedState) -> GroundedState | None:
        """A list or a count: every checked claim, listed by code (no manager call); None for other questions."""
        claims = claims_from_dicts(state.get("stage", []))
        answer = manager.items_answer(claims, total)
        if answer is None:
            return None
        trace = {**state.get("trace", {}), "items": manager.items_kind, "shown": claims_to_dicts(claims)}
        if hooks.on_text:
            hooks.on_text(answer)
        evidence = tuple(sorted({p for c in claims for p in c.cited_parts}))
        return {"output": answer, "calls": [], "not_found": False, "lookback": [], "trace": trace,
                "notes": CommunicationUnit(render_claims(claims, numbered=False, source=False), evidence).to_dict()}

    def write(state: GroundedState) -> Steps[GroundedState]:
        if (items := listed(state)) is not None:
            return items
        prepared, extra, sources, looked, trace = manager_inputs(state)
        if nothing(prepared, extra, sources):
            return not_found(trace)
        started("manager", None)
        completion = yield from manager.writing(prepared.notes, extra, sources, path=path, on_text=stream())
        return answered(prepared, completion, looked, trace)

    def next_after_manager(state: GroundedState) -> Literal["fix", "__end__"]:
        return "fix" if state.get("draft") and not state.get("output") else END

    # -- a summary's one retry -------------------------------------------------------------------------------------
    def fixed(state: GroundedState, completion: Completion) -> GroundedState:
        record = recorded("manager", None, completion, manager.budget.answer_tokens)
        trace = dict(state.get("trace", {}))
        first = trace.get("summary_check", {})
        check = check_summary(completion.text, folded())
        if check.unsupported:
            check = drop_unsupported(check.text, folded())
        if not check.text.strip():  # the retry lost everything: the first draft, its bad sentences dropped
            check = drop_unsupported(state["draft"], folded())
        trace["summary_check"] = {**first, "retried": True, "after_retry": check.to_dict()}
        left, written = len(grounding.words(check.text)), len(grounding.words(completion.text))
        if left < THIN_SUMMARY_WORDS and left < written / 2:  # the checks took most of it: the claims themselves
            extract = check_summary(manager.claims_summary(claims_from_dicts(state.get("stage", []))), folded())
            if len(grounding.words(extract.text)) > len(grounding.words(check.text)):
                check = extract
                trace["summary_check"]["extractive"] = True
        if hooks.on_text:
            hooks.on_text(check.text)
        return {"output": check.text, "calls": [record], "trace": trace}

    def fix(state: GroundedState) -> Steps[GroundedState]:
        started("manager", None)
        unsupported = state.get("trace", {}).get("summary_check", {}).get("unsupported", [])
        return fixed(state, (yield from manager.fixing(state["draft"], unsupported, path)))

    graph = StateGraph(GroundedState)
    if worker.shared:
        graph.add_node("worker", steps_node(read_next, "worker"))
        graph.add_conditional_edges(START, next_after_worker, ["worker", "gather"])
        graph.add_conditional_edges("worker", next_after_worker, ["worker", "gather"])
    else:
        graph.add_node("read", steps_node(read_part, "read"))
        graph.add_conditional_edges(START, fan_out, ["read", "gather"])
        graph.add_edge("read", "gather")
    graph.add_node("gather", gather)
    graph.add_node("collapse", steps_node(collapse, "collapse"))
    graph.add_node("manager", steps_node(write, "manager"))
    graph.add_node("fix", steps_node(fix, "fix"))
    graph.add_conditional_edges("gather", next_after_collapse, ["collapse", "manager"])
    graph.add_conditional_edges("collapse", next_after_collapse, ["collapse", "manager"])
    graph.add_conditional_edges("manager", next_after_manager, ["fix", END])
    graph.add_edge("fix", END)
    return graph.compile(checkpointer=checkpointer)


def used_claims(final: dict[str, Any], answer: str, question: str | None) -> list[Claim]:
    """The claims an answer rests on: those shown to the manager whose new names and numbers the answer repeats;
    when none does, the best-ranked shown claim (the answer came from reading it)."""
    shown = claims_from_dicts(final.get("trace", {}).get("shown", []))
    if question is None:
        return shown
    asked = grounding.entities(question)
    said = grounding.fold(answer).text
    used = [c for c in shown if any(grounding.present(grounding.fold(e).text, said)
                                    for e in grounding.entities(c.text) - asked)]
    return used or shown[:1]


def dropped_claims(final: dict[str, Any]) -> list[Dropped]:
    return [Dropped.from_dict(d) for d in final.get("dropped", [])]
