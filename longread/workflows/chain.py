"""`chain`: Chain-of-Agents (Zhang et al., "Chain of Agents: Large Language Models Collaborating on Long-Context
Tasks", NeurIPS 2024), and `lookback`, the same chain whose manager also reads the source passages the final
notes cite (ReadAgent's page lookup: Lee et al., "A Human-Inspired Reading Agent with Gist Memory of Very Long
Contexts", ICML 2024).

Workers read the segments in order, each passing notes (the communication unit) to the next; the manager answers
from the last notes. With lookback, the manager's prompt also holds the best passages (retrieval chunks ranked
by similarity to the question and the notes) of the segments the notes cite, as many as fit its window, so exact
names and numbers come from the text and not from a paraphrase. On the local backend those segments' prefix
caches are warm already. Both run as the LangGraph chain of chain_of_agents.py, checkpointed per worker step.
"""

from __future__ import annotations

import bisect

from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Sequence

from ..agents import Budget, CommunicationUnit, Manager, Mode, Worker, default_caps, lookback_text
from ..agents.bridges import DocumentIndex
from ..agents.claims import claims_from_dicts
from ..agents.questions import aggregate_question, items_asked, listing_question
from ..agents.grounded import ClaimManager, ClaimWorker, item_sentences
from ..backends.calls import Blocking, Steps
from ..results import CallRecord, Citation, Result, unique_citations
from ..segmenting import Segment
from .base import ReadingContext, StepsStrategy
from .chain_of_agents import build_chain_graph, initial_state
from .hooks import ChainHooks
from .grounded_graph import build_grounded_graph, dropped_claims, initial_grounded_state, used_claims
from .runs import graph_run


@dataclass
class ChainRun:
    """One chain pass, planned: its budget, segments, reading order, graph and thread."""

    mode: Mode
    question: str | None
    budget: Budget
    segments: list[Segment]
    graph: Any
    thread_id: str
    manager: Manager
    path: int | None
    order: list[int]
    worker: "Worker | ClaimWorker | None" = None
    grounded: bool = False  # claims notes: the graph of grounded_graph.py
    concurrency: int | None = None  # map form: how many workers may run at once

    @property
    def steps(self) -> int:
        """Super-steps the run may take (LangGraph's recursion limit): one per worker, the collapse rounds, the
        manager and the fix."""
        return 2 * len(self.segments) + 8 if self.grounded else len(self.segments) + 1

    def initial(self) -> dict[str, Any]:
        return dict(initial_grounded_state()) if self.grounded else dict(initial_state())


def lookback_passages(ctx: ReadingContext, manager: Manager, segments: Sequence[Segment], notes: CommunicationUnit,
                      extra: Sequence[str], question: str) -> tuple[str, list[int]]:
    """The source text of the cited segments that fits the manager's window: retrieval chunks inside those
    segments, best first by similarity to the question and the notes, shown in document order."""
    cited = [segments[i] for i in notes.evidence if i < len(segments)]
    if not cited:
        return "", []
    inside = []
    for score, chunk in ctx.rank_chunks(f"{question}\n{notes.text}"):
        owner = next((s for s in cited if s.start <= chunk.start and chunk.end <= s.end), None)
        if owner is not None:
            inside.append((owner.index, chunk))
    chosen: list[tuple[int, Segment]] = []
    for owner, chunk in inside:
        trial = sorted([*chosen, (owner, chunk)], key=lambda pair: pair[1].start)
        if manager.fits(notes, extra, lookback_text(ctx.prompts, [(i, c.text) for i, c in trial])):
            chosen = trial
    if not chosen:
        return "", []
    return lookback_text(ctx.prompts, [(i, c.text) for i, c in chosen]), sorted({i for i, _ in chosen})


FOCUS_CHUNK_TOKENS = 128
ITEM_FOCUS_SHARE = 8  # a list or count question: an eighth of the window for the part's sentences naming its names


def item_ranker(ctx: ReadingContext, question: str) -> Callable[[Sequence[str]], list[float]]:
    """Cosine similarity of each evidence item to the question (the memory's embedder)."""

    def rank(items: Sequence[str]) -> list[float]:
        embedder = ctx.get_embedder()
        return [float(v) for v in embedder.embed_documents(list(items)) @ embedder.embed_query(question)]

    return rank


def focus_passages(ctx: ReadingContext, query: str, room: int) -> Callable[[Segment], list[str]]:
    """For a guided chain: the retrieval chunks inside a segment most similar to the query, best first, within
    `room` tokens (each with its quoting frame), for the worker to see right before its task."""
    frame = ctx.model.tokenizer.count(ctx.prompts.focus_passage.format(text="")) + 2
    heading = ctx.model.tokenizer.count(ctx.prompts.focus_heading)
    ranked: list[tuple[float, Segment]] | None = None

    def passages(segment: Segment) -> list[str]:
        nonlocal ranked
        if ranked is None:
            ranked = ctx.rank_chunks(query, FOCUS_CHUNK_TOKENS)
        chosen, used = [], heading
        for _, chunk in ranked:
            if segment.start <= chunk.start and chunk.end <= segment.end and used + chunk.tokens + frame <= room:
                chosen.append(chunk.text)
                used += chunk.tokens + frame
            if len(chosen) == 2:
                break
        return chosen

    return passages


def top_segments(ctx: ReadingContext, question: str, segments: Sequence[Segment], k: int) -> list[int]:
    """The k segments whose best retrieval chunk is most similar to the question, in document order. A chunk
    scores every segment it overlaps (the two cuttings do not align)."""
    best = [float("-inf")] * len(segments)
    starts = [s.start for s in segments]
    for score, chunk in ctx.rank_chunks(question):
        i = max(bisect.bisect_right(starts, chunk.start) - 1, 0)
        while i < len(segments) and segments[i].start < chunk.end:
            best[i] = max(best[i], score)
            i += 1
    ranked = sorted(range(len(segments)), key=lambda i: (-best[i], i))
    return sorted(ranked[:k])


@dataclass
class ChainStrategy(StepsStrategy):
    """Chain-of-Agents: n workers in order, then the manager. `lookback=True` is the `lookback` strategy;
    `guided=True` shows each worker the passages of its segment closest to the question (retrieval guiding the
    chain, one of the designs the strategies issue asks to measure)."""

    name: ClassVar[str] = "chain"
    lookback: bool = False
    guided: bool = False
    # "claims" (the default): each worker lists claims with verbatim quotes, checked by code before they travel
    # (agents/claims.py), and the manager reads only checked claims, conflicts settled (agents/resolve.py).
    # "rewrite": each worker rewrites the notes it received (the paper's CoA); "evidence": each worker answers
    # from its part with a quote, grounded and appended by code (agents/notes.py); "map": evidence, but a worker
    # does not see the earlier notes (LLM x MapReduce's map step: small models copy what they are shown).
    notes: str = "claims"
    # claims only: "chain" shows each worker the checked claims so far (later parts build on earlier ones), "map"
    # does not, so the workers are independent and read at once; "auto": chain for a question, map for a summary.
    form: str = "auto"
    concurrency: int = 16  # the map form: workers at once (a local engine batches them; an API gets that many)
    # `segment`: at most this many tokens a segment (0: as many as the window holds); a small model reads a short
    # part more reliably. `top`: read only the `top` segments most similar to the question (their best retrieval
    # chunk), in document order (0: every segment): retrieval chooses the parts, the chain reads them.
    segment: int = 0
    top: int = 0

    def __post_init__(self) -> None:
        if self.notes not in ("claims", "rewrite", "evidence", "map"):
            raise ValueError(f"notes must be claims, rewrite, evidence or map, got {self.notes!r}")
        if self.form not in ("auto", "chain", "map"):
            raise ValueError(f"form must be auto, chain or map, got {self.form!r}")
        if self.form != "auto" and self.notes != "claims":
            raise ValueError("form applies to notes=claims only")
        if self.guided and self.notes == "claims":
            raise ValueError("guided works with notes=rewrite, evidence or map")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.segment < 0 or self.top < 0:
            raise ValueError(f"segment and top must be 0 (off) or positive, got {self.segment} and {self.top}")

    @property
    def spec(self) -> str:
        base = "lookback" if self.lookback else "chain"
        options = [f"{k}=true" for k in ("guided",) if getattr(self, k)]
        if self.notes != "claims":
            options.append(f"notes={self.notes}")
        if self.form != "auto":
            options.append(f"form={self.form}")
        options += [f"{k}={getattr(self, k)}" for k in ("segment", "top") if getattr(self, k)]
        return f"{base}:{','.join(options)}" if options else base

    def focus_room(self, ctx: ReadingContext) -> int:
        return min(2 * FOCUS_CHUNK_TOKENS + 24, ctx.window // 12) if self.guided else 0

    def shared(self, mode: Mode, question: str | None = None) -> bool:
        """Whether workers see the checked claims so far (the chain form) rather than reading alone (map). `auto`:
        the chain form for a question, the map form for a summary and an aggregate question (its items are
        independent, and a small worker shown the earlier items copies them)."""
        if self.form != "auto":
            return self.form == "chain"
        return mode == "query" and not aggregate_question(question or "")

    def claims_prompts(self, ctx: ReadingContext, mode: Mode, question: str | None = None) -> Any:
        p = ctx.prompts
        shared = self.shared(mode, question)
        task = p.worker_claims_task if shared else p.worker_claims_map_task
        if mode == "query" and aggregate_question(question or ""):
            task = p.worker_claims_list_task
            if items_asked(question or "") == "count":  # its readers list; code counts (grounded.py)
                listing = listing_question(question or "").replace("{", "{{").replace("}", "}}")
                task = task.replace("{question}", listing)
        return p.with_overrides(
            worker_query_task=task,
            worker_summary_task=p.worker_claims_summary_task,
            previous_notes_heading=p.claims_notes_heading if shared else "",
            no_notes_yet=p.no_claims_yet if shared else "",
            manager_query_task=p.manager_claims_task,
            manager_summary_task=p.manager_claims_summary_task,
        )

    def plan(self, ctx: ReadingContext, question: str | None, *, order: Sequence[int] | None = None,
             path: int | None = None, memory: bool = True) -> ChainRun:
        mode = self.check_mode(question)
        if self.notes == "claims":
            return self.plan_claims(ctx, mode, question, order=order, path=path, memory=memory)
        guided = self.guided and mode == "query"
        evidence = self.notes in ("evidence", "map") and mode == "query"
        if evidence:  # the worker's task is the evidence task: budgets count it
            overrides = {"worker_query_task": ctx.prompts.worker_evidence_task}
            if self.notes == "map":
                overrides.update(worker_query_task=ctx.prompts.worker_map_task, previous_notes_heading="",
                                 no_notes_yet="")
            ctx = replace(ctx, prompts=ctx.prompts.with_overrides(**overrides))
        budget = ctx.budget(mode, question, focus_tokens=self.focus_room(ctx) if guided else 0)
        segments = ctx.segments(min(budget.segment_tokens, self.segment or budget.segment_tokens))
        if self.top and mode == "query":
            assert question is not None
            chosen = set(top_segments(ctx, question, segments, self.top))
            order = [i for i in (range(len(segments)) if order is None else order) if i in chosen]
        worker = Worker(ctx.model, ctx.prompts, mode, question, budget)
        if guided:
            assert question is not None
            worker.focus = focus_passages(ctx, question, budget.focus_tokens)
        if evidence:
            assert question is not None
            worker.evidence, worker.rank = True, item_ranker(ctx, question)
        manager = Manager(ctx.model, ctx.prompts, mode, question, budget)
        hooks = ctx.hooks(len(segments), path, stream=path is None)
        if memory and ctx.memory is not None:
            reading = ctx.memory
            reading.recalled.clear()
            hooks.archive = reading.archive
            hooks.recall = lambda notes: reading.recall(question, notes.text, lambda texts: manager.fits(notes, texts))
        if self.lookback and mode == "query":
            assert question is not None
            hooks.lookback = lambda notes, extra: lookback_passages(ctx, manager, segments, notes, extra, question)
        graph = build_chain_graph(segments, worker, manager, checkpointer=ctx.checkpointer, hooks=hooks, order=order,
                                  path=path)
        parts: list[Any] = [mode, question]
        if self.lookback:
            parts.append("lookback")
        if guided:
            parts.append("guided")
        if evidence:
            parts.append(self.notes)
        if self.segment:
            parts.append(f"segment={self.segment}")
        if order is not None:
            parts.append(list(order))
        reading_order = list(range(len(segments))) if order is None else list(order)
        return ChainRun(mode, question, budget, segments, graph, ctx.thread_id("coa", *parts), manager, path,
                        reading_order, worker)

    def plan_claims(self, ctx: ReadingContext, mode: Mode, question: str | None, *, order: Sequence[int] | None,
                    path: int | None, memory: bool) -> ChainRun:
        """The grounded chain: claim workers (chain or map form), the collapse stage, the claims manager."""
        shared = self.shared(mode, question)
        ctx = replace(ctx, prompts=self.claims_prompts(ctx, mode, question))
        # claims carry their quotes: a worker gets a summary's room for them (window/8), a question's too
        items = mode == "query" and items_asked(question or "") is not None
        # a list or count question: room after each part for its sentences that name what the question names
        focus_room = ctx.window // ITEM_FOCUS_SHARE if items else 0
        budget = ctx.budget(mode, question, notes_tokens=default_caps(ctx.window, "summary")[0],
                            focus_tokens=focus_room)
        segments = ctx.segments(min(budget.segment_tokens, self.segment or budget.segment_tokens))
        if self.top and mode == "query":
            assert question is not None
            chosen = set(top_segments(ctx, question, segments, self.top))
            order = [i for i in (range(len(segments)) if order is None else order) if i in chosen]
        worker = ClaimWorker(ctx.model, ctx.prompts, mode, question, budget, shared=shared)
        if items and question is not None:
            count = ctx.model.tokenizer.count
            worker.focus = item_sentences(question, count, budget.focus_tokens - count(ctx.prompts.focus_heading) - 2)
        if shared and question is not None:
            worker.rank = item_ranker(ctx, question)
        manager = ClaimManager(ctx.model, ctx.prompts, mode, question, budget,
                               DocumentIndex(ctx.document.text, [s.start for s in segments]))
        hooks = ctx.hooks(len(segments), path, stream=path is None)
        if memory and ctx.memory is not None:
            reading = ctx.memory
            reading.recalled.clear()
            hooks.archive = reading.archive
            hooks.recall = lambda notes: reading.recall(question, notes.text, lambda texts: manager.fits(notes.text, texts))
        if self.lookback and mode == "query":
            assert question is not None
            hooks.lookback = lambda notes, extra: lookback_passages(ctx, manager, segments, notes, extra, question)
        graph = build_grounded_graph(segments, worker, manager, ctx.document.text, checkpointer=ctx.checkpointer,
                                     hooks=hooks, order=order, path=path)
        parts: list[Any] = [mode, question, "claims", "chain" if shared else "map"]
        if self.lookback:
            parts.append("lookback")
        if self.segment:
            parts.append(f"segment={self.segment}")
        if order is not None:
            parts.append(list(order))
        reading_order = list(range(len(segments))) if order is None else list(order)
        return ChainRun(mode, question, budget, segments, graph, ctx.thread_id("coa", *parts), manager, path,  # type: ignore[arg-type]
                        reading_order, worker, grounded=True, concurrency=None if shared else self.concurrency)

    @staticmethod
    def prefill_ahead(plan: ChainRun) -> None:
        """The segments' `[system][segment]` prefixes (question- and notes-free) into the model's prefix cache in
        batches before the first worker runs, where the model does that (the local engine on a GPU)."""
        worker = plan.worker
        fill = getattr(worker.model, "prefill_ahead", None) if worker is not None else None
        if fill is not None and getattr(worker, "focus", None) is None:
            empty: Any = () if plan.grounded else CommunicationUnit()
            fill([worker.messages(plan.segments[i], empty) for i in plan.order])

    def reading(self, ctx: ReadingContext, question: str | None) -> Steps[Result]:
        plan = self.plan(ctx, question)
        yield Blocking(lambda: self.prefill_ahead(plan))
        final, reused = yield from graph_run(plan.graph, plan.thread_id, plan.initial(), steps=plan.steps,
                                             fresh=ctx.fresh, concurrency=plan.concurrency)
        return self.result(ctx, plan, final, reused)

    def thread_ids(self, ctx: ReadingContext, question: str | None) -> list[str]:
        return [self.plan(ctx, question).thread_id]

    def result(self, ctx: ReadingContext, plan: ChainRun, final: dict[str, Any], reused: bool) -> Result:
        if plan.grounded:
            return self.claims_result(ctx, plan, final, reused)
        notes = CommunicationUnit.from_dict(final.get("notes", {}))
        segments = plan.segments
        citations = [Citation(i, segments[i].start, segments[i].end) for i in notes.evidence if i < len(segments)]
        extras: dict[str, Any] = {"not_found": bool(final.get("not_found")), "reused": reused}
        if self.lookback:
            extras["lookback"] = list(final.get("lookback", []))
        if ctx.memory is not None and plan.path in (None, 0):
            # The notes recalled for the manager are evidence too.
            citations = unique_citations([*citations, *ctx.memory.recalled_citations()])
            extras.update(recalled=[item.id for item in ctx.memory.recalled], session=ctx.memory.session)
        return ctx.result(
            self.spec, plan.mode, plan.question, final.get("output", ""), citations=citations,
            segments=len(segments), calls=[CallRecord.from_dict(c) for c in final.get("calls", [])],
            window=plan.budget.window, notes=notes.text, document_tokens=sum(s.tokens for s in segments),
            extras=extras,
        )

    def claims_result(self, ctx: ReadingContext, plan: ChainRun, final: dict[str, Any], reused: bool) -> Result:
        """The answer with citations to the sentences of the claims it rests on, every checked claim, every
        dropped one with its reason, and the manager's trace (resolution, collapse, summary check)."""
        segments = plan.segments
        answer = final.get("output", "")
        used = [] if final.get("not_found") else used_claims(final, answer, plan.question)
        spans = [Citation(c.part, s, e) for c in used for s, e in c.spans]
        extras: dict[str, Any] = {
            "not_found": bool(final.get("not_found")), "reused": reused,
            "claims": [c.to_dict() for c in claims_from_dicts(final.get("claims", []))],
            "dropped": [d.to_dict() for d in dropped_claims(final)],
            "trace": {k: v for k, v in final.get("trace", {}).items() if k != "shown"},
            "form": "chain" if isinstance(plan.worker, ClaimWorker) and plan.worker.shared else "map",
        }
        if self.lookback:
            extras["lookback"] = list(final.get("lookback", []))
        citations = unique_citations(spans)
        if ctx.memory is not None and plan.path in (None, 0):
            citations = unique_citations([*citations, *ctx.memory.recalled_citations()])
            extras.update(recalled=[item.id for item in ctx.memory.recalled], session=ctx.memory.session)
        return ctx.result(
            self.spec, plan.mode, plan.question, answer, citations=citations, segments=len(segments),
            calls=[CallRecord.from_dict(c) for c in final.get("calls", [])], window=plan.budget.window,
            notes=final.get("notes", {}).get("text", ""), document_tokens=sum(s.tokens for s in segments),
            extras=extras,
        )


def lookback(**options: Any) -> ChainStrategy:
    """`lookback`: the chain, and the manager re-reads the source passages the notes cite (the registry's factory)."""
    return ChainStrategy(**{"lookback": True, **options})
