"""The grounded chain as a LangGraph StateGraph: workers whose replies become checked claims, a collapse stage for
claims that do not fit the manager's window, the manager, and (a summary) one retry for what the document lacks.

    chain form:  START -> worker -> worker -> ... -> gather -> [collapse ...] -> manager -> [fix] -> END
    map form:    START -> Send(read, part) x n (one super-step, run at once) -> gather -> ... the same

Each worker call is its own task, so with a checkpointer a run killed during the reading resumes with the parts it
had read (LangGraph keeps a finished task's writes); each collapse call, the manager and the fix are one super-step
each. The segments stay out of the state; the claims travel as dicts (agents/claims.py).

`GroundedGraph` holds what the nodes share (the segments, the agents, the hooks, the reading order); each node is
one of its methods, written once as steps (runs.steps_node), and `build` wires them. Node names and state keys are
the checkpoint's format: a thread saved by an earlier version resumes only if they stay as they are.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, Sequence, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from .. import grounding
from ..agents.claims import Claim, Dropped, claims_from_dicts, claims_to_dicts, merge_claims, render_claims
from ..agents.grounded import ClaimManager, ClaimStep, ClaimWorker, ManagerInput, check_summary, drop_unsupported
from ..agents.notes import CommunicationUnit
from ..backends.base import Completion
from ..backends.calls import Steps
from ..segmenting import Segment
from .hooks import ChainHooks, HookedNodes
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


class ManagerReading(NamedTuple):
    """What the manager reads: its prepared claims, recalled notes, looked-back sources (and their segments), and
    the trace so far."""

    prepared: ManagerInput
    extra: list[str]
    sources: str
    looked: list[int]
    trace: dict[str, Any]


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
    order = list(range(len(segments))) if order is None else list(order)
    nodes = GroundedGraph(segments, hooks or ChainHooks(), order, path, worker=worker, manager=manager,
                          document=document)
    return nodes.build(checkpointer)


@dataclass
class GroundedGraph(HookedNodes):
    """What the grounded graph's nodes share; one method per node (and per router), `build` wires them."""

    worker: ClaimWorker
    manager: ClaimManager
    document: str

    def build(self, checkpointer: Any = None) -> Any:
        """The compiled graph. The checkpointer is passed in (SqliteSaver in the CLI), never created here."""
        graph = StateGraph(GroundedState)
        if self.worker.shared:
            graph.add_node("worker", steps_node(self.read_next, "worker"))
            graph.add_conditional_edges(START, self.next_after_worker, ["worker", "gather"])
            graph.add_conditional_edges("worker", self.next_after_worker, ["worker", "gather"])
        else:
            graph.add_node("read", steps_node(self.read_part, "read"))
            graph.add_conditional_edges(START, self.fan_out, ["read", "gather"])
            graph.add_edge("read", "gather")
        graph.add_node("gather", self.gather)
        graph.add_node("collapse", steps_node(self.collapse, "collapse"))
        graph.add_node("manager", steps_node(self.write, "manager"))
        graph.add_node("fix", steps_node(self.fix, "fix"))
        graph.add_conditional_edges("gather", self.next_after_collapse, ["collapse", "manager"])
        graph.add_conditional_edges("collapse", self.next_after_collapse, ["collapse", "manager"])
        graph.add_conditional_edges("manager", self.next_after_manager, ["fix", END])
        graph.add_edge("fix", END)
        return graph.compile(checkpointer=checkpointer)

    @functools.cached_property
    def folded(self) -> grounding.Folded:
        """The document folded on first need (a summary's check), once."""
        return grounding.fold(self.document)

    # -- reading -----------------------------------------------------------------------------------------------------
    def read_next(self, state: GroundedState) -> Steps[GroundedState]:
        """Node `worker` (chain form): reads the next segment of the order, shown the claims so far."""
        position = state["next_segment"]
        segment = self.segments[self.order[position]]
        self.started("worker", segment.index)
        step = yield from self.worker.reading(segment, so_far(state), self.path)
        return {**self.worker_update(segment, step), "next_segment": position + 1}

    def read_part(self, task: dict[str, Any]) -> Steps[GroundedState]:
        """Node `read` (map form): reads one segment (`task["segment"]`, sent by `fan_out`) on its own."""
        segment = self.segments[task["segment"]]
        self.started("worker", segment.index)
        return self.worker_update(segment, (yield from self.worker.reading(segment, (), self.path)))

    def worker_update(self, segment: Segment, step: ClaimStep) -> GroundedState:
        """A worker's checked claims, its dropped ones and its call, archived first where memory keeps notes."""
        if self.hooks.archive:
            text = render_claims(step.kept, numbered=False, source=False)
            self.hooks.archive(segment, CommunicationUnit(text, (segment.index,)), not step.kept)
        record = self.recorded("worker", segment.index, step.completion, self.worker.budget.notes_tokens,
                               passed_on=not step.kept)
        return {"claims": claims_to_dicts(step.kept), "dropped": [d.to_dict() for d in step.dropped],
                "calls": [record]}

    def fan_out(self, state: GroundedState) -> list[Send] | str:
        """Router from START (map form): one `read` task per segment, all in one super-step."""
        if not self.order:
            return "gather"
        return [Send("read", {"segment": i}) for i in self.order]

    def next_after_worker(self, state: GroundedState) -> Literal["worker", "gather"]:
        return "worker" if state.get("next_segment", 0) < self.total else "gather"

    # -- gathering and collapsing ------------------------------------------------------------------------------------
    def manager_fits(self, claims: Sequence[Claim]) -> bool:
        return self.manager.fitting(claims) is not None

    def gather(self, state: GroundedState) -> GroundedState:
        """Node `gather`: the claims in document order; groups to collapse when they do not fit the manager."""
        claims = sorted(so_far(state), key=lambda c: (c.part, c.spans[:1]))
        if not claims or self.manager.items_kind or self.manager_fits(claims):  # code lists items: no window to fit
            return {"stage": claims_to_dicts(claims), "pending": [], "merged": [], "rounds": 0}
        groups = self.manager.groups(claims)
        return {"stage": claims_to_dicts(claims), "pending": [claims_to_dicts(g) for g in groups], "merged": [],
                "rounds": 1}

    def collapse(self, state: GroundedState) -> Steps[GroundedState]:
        """Node `collapse`: one manager call merges the first pending group."""
        self.started("manager", None)
        completion = yield from self.manager.collapsing(claims_from_dicts(state["pending"][0]), self.path)
        return self.collapse_update(state, completion)

    def collapse_update(self, state: GroundedState, completion: Completion) -> GroundedState:
        """The merged group; at a round's end, the next round's groups, or the stage the manager reads (it fits,
        the rounds ran out, or a round merged nothing)."""
        group = claims_from_dicts(state["pending"][0])
        items, dropped = self.manager.collapsed(group, completion.text)
        record = self.recorded("manager", None, completion, self.manager.collapse_tokens)
        merged = [*claims_from_dicts(state.get("merged", [])), *items]
        rest = state["pending"][1:]
        update: GroundedState = {"calls": [record], "dropped": [d.to_dict() for d in dropped]}
        if rest:
            return {**update, "pending": rest, "merged": claims_to_dicts(merged)}
        rounds = state.get("rounds", 1)
        before = len(claims_from_dicts(state.get("stage", [])))
        trace = {**state.get("trace", {}), "collapse_rounds": rounds}
        if self.manager_fits(merged) or rounds >= MAX_COLLAPSE_ROUNDS or len(merged) >= before:
            return {**update, "pending": [], "merged": [], "stage": claims_to_dicts(merged), "trace": trace}
        groups = self.manager.groups(merged)
        return {**update, "pending": [claims_to_dicts(g) for g in groups], "merged": [],
                "stage": claims_to_dicts(merged), "rounds": rounds + 1, "trace": trace}

    def next_after_collapse(self, state: GroundedState) -> Literal["collapse", "manager"]:
        return "collapse" if state.get("pending") else "manager"

    # -- the manager -------------------------------------------------------------------------------------------------
    def write(self, state: GroundedState) -> Steps[GroundedState]:
        """Node `manager`: a list or count by code, "not found" without a call, or the manager's answer."""
        if (items := self.listed(state)) is not None:
            return items
        reading = self.manager_reading(state)
        if self.nothing(reading):
            return self.not_found(reading.trace)
        self.started("manager", None)
        completion = yield from self.manager.writing(reading.prepared.notes, reading.extra, reading.sources,
                                                     path=self.path, on_text=self.stream())
        return self.answered(reading, completion)

    def listed(self, state: GroundedState) -> GroundedState | None:
        """A list or a count: every checked claim, listed by code (no manager call); None for other questions."""
        claims = claims_from_dicts(state.get("stage", []))
        answer = self.manager.items_answer(claims, self.total)
        if answer is None:
            return None
        trace = {**state.get("trace", {}), "items": self.manager.items_kind, "shown": claims_to_dicts(claims)}
        self.shown(answer)
        evidence = tuple(sorted({p for c in claims for p in c.cited_parts}))
        return {"output": answer, "calls": [], "not_found": False, "lookback": [], "trace": trace,
                "notes": CommunicationUnit(render_claims(claims, numbered=False, source=False), evidence).to_dict()}

    def manager_reading(self, state: GroundedState) -> ManagerReading:
        """The stage's claims as they fit the manager's window, with recalled notes and looked-back sources."""
        manager = self.manager
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
        extra = list(self.hooks.recall(notes)) if self.hooks.recall else []
        sources, looked = self.hooks.lookback(notes, extra) if self.hooks.lookback else ("", [])
        trace["shown"] = claims_to_dicts(prepared.claims)
        return ManagerReading(prepared, extra, sources, looked, trace)

    def nothing(self, reading: ManagerReading) -> bool:
        """Nothing to read: no claim, no recalled note, no source (a dry run calls anyway: it counts the call)."""
        if getattr(self.manager.model, "upper_bound", False):
            return False
        return not reading.prepared.claims and not reading.extra and not reading.sources.strip()

    def not_found(self, trace: dict[str, Any]) -> GroundedState:
        manager = self.manager
        if manager.mode == "query":
            answer = manager.not_found(self.total)
        else:
            answer = manager.prompts.nothing_to_summarize.format(parts=self.total)
        self.shown(answer)
        return {"output": answer, "calls": [], "not_found": True, "lookback": [], "trace": trace,
                "notes": CommunicationUnit().to_dict()}

    def stream(self) -> Any:
        # a summary is checked before anyone sees it, so it is not streamed as it is written
        return self.hooks.on_text if self.manager.mode == "query" else None

    def answered(self, reading: ManagerReading, completion: Completion) -> GroundedState:
        """The manager's answer; a summary checked against the document first, kept as a draft for `fix` when it
        names what the document lacks (or in a dry run, which counts the retry)."""
        prepared, trace = reading.prepared, reading.trace
        record = self.recorded("manager", None, completion, self.manager.budget.answer_tokens)
        evidence = tuple(sorted({p for c in prepared.claims for p in c.cited_parts}))
        update: GroundedState = {"calls": [record], "not_found": False, "lookback": reading.looked,
                                 "notes": CommunicationUnit(prepared.notes, evidence).to_dict()}
        if self.manager.mode == "summary":
            check = check_summary(completion.text, self.folded)
            trace["summary_check"] = check.to_dict()
            if check.unsupported or getattr(self.manager.model, "upper_bound", False):  # a dry run counts the retry
                return {**update, "draft": check.text, "trace": trace}
            self.shown(check.text)
            return {**update, "output": check.text, "trace": trace}
        return {**update, "output": completion.text, "trace": trace}

    def next_after_manager(self, state: GroundedState) -> Literal["fix", "__end__"]:
        return "fix" if state.get("draft") and not state.get("output") else END

    # -- a summary's one retry ---------------------------------------------------------------------------------------
    def fix(self, state: GroundedState) -> Steps[GroundedState]:
        """Node `fix`: one manager call rewrites a draft summary without what the document lacks."""
        self.started("manager", None)
        unsupported = state.get("trace", {}).get("summary_check", {}).get("unsupported", [])
        return self.fixed(state, (yield from self.manager.fixing(state["draft"], unsupported, self.path)))

    def fixed(self, state: GroundedState, completion: Completion) -> GroundedState:
        """The retried summary, checked; what the checks leave thin falls back to the draft or to the claims."""
        record = self.recorded("manager", None, completion, self.manager.budget.answer_tokens)
        folded = self.folded
        trace = dict(state.get("trace", {}))
        first = trace.get("summary_check", {})
        check = check_summary(completion.text, folded)
        if check.unsupported:
            check = drop_unsupported(check.text, folded)
        if not check.text.strip():  # the retry lost everything: the first draft, its bad sentences dropped
            check = drop_unsupported(state["draft"], folded)
        trace["summary_check"] = {**first, "retried": True, "after_retry": check.to_dict()}
        left, written = len(grounding.words(check.text)), len(grounding.words(completion.text))
        if left < THIN_SUMMARY_WORDS and left < written / 2:  # the checks took most of it: the claims themselves
            extract = check_summary(self.manager.claims_summary(claims_from_dicts(state.get("stage", []))), folded)
            if len(grounding.words(extract.text)) > len(grounding.words(check.text)):
                check = extract
                trace["summary_check"]["extractive"] = True
        self.shown(check.text)
        return {"output": check.text, "calls": [record], "trace": trace}


def so_far(state: GroundedState) -> list[Claim]:
    """The workers' claims so far, merged."""
    return merge_claims([], claims_from_dicts(state.get("claims", [])))


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
