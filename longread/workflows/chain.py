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

import asyncio
import bisect

from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Sequence

from ..agents import Budget, CommunicationUnit, Manager, Mode, Worker, lookback_text
from ..results import CallRecord, Citation, Result, unique_citations
from ..segmenting import Segment
from .base import ReadingContext, Strategy
from .chain_of_agents import ChainHooks, build_chain_graph, initial_state
from .runs import arun_graph, run_graph


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
    worker: Worker | None = None


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
class ChainStrategy(Strategy):
    """Chain-of-Agents: n workers in order, then the manager. `lookback=True` is the `lookback` strategy;
    `guided=True` shows each worker the passages of its segment closest to the question (retrieval guiding the
    chain, one of the designs the strategies issue asks to measure)."""

    name: ClassVar[str] = "chain"
    lookback: bool = False
    guided: bool = False
    # "rewrite": each worker rewrites the notes it received (CoA); "evidence": each worker answers from its part
    # with a quote, grounded and appended by code (agents/notes.py); "map": evidence, but a worker does not see
    # the earlier notes (LLM x MapReduce's map step: small models copy what they are shown).
    notes: str = "rewrite"
    # `segment`: at most this many tokens a segment (0: as many as the window holds); a small model reads a short
    # part more reliably. `top`: read only the `top` segments most similar to the question (their best retrieval
    # chunk), in document order (0: every segment): retrieval chooses the parts, the chain reads them.
    segment: int = 0
    top: int = 0

    def __post_init__(self) -> None:
        if self.notes not in ("rewrite", "evidence", "map"):
            raise ValueError(f"notes must be rewrite, evidence or map, got {self.notes!r}")
        if self.segment < 0 or self.top < 0:
            raise ValueError(f"segment and top must be 0 (off) or positive, got {self.segment} and {self.top}")

    @property
    def spec(self) -> str:
        base = "lookback" if self.lookback else "chain"
        options = [f"{k}=true" for k in ("guided",) if getattr(self, k)]
        if self.notes != "rewrite":
            options.append(f"notes={self.notes}")
        options += [f"{k}={getattr(self, k)}" for k in ("segment", "top") if getattr(self, k)]
        return f"{base}:{','.join(options)}" if options else base

    def focus_room(self, ctx: ReadingContext) -> int:
        return min(2 * FOCUS_CHUNK_TOKENS + 24, ctx.window // 12) if self.guided else 0

    def plan(self, ctx: ReadingContext, question: str | None, *, order: Sequence[int] | None = None,
             path: int | None = None, memory: bool = True) -> ChainRun:
        mode = self.check_mode(question)
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

    @staticmethod
    def prefill_ahead(plan: ChainRun) -> None:
        """The segments' `[system][segment]` prefixes (question- and notes-free) into the model's prefix cache in
        batches before the first worker runs, where the model does that (the local engine on a GPU)."""
        worker = plan.worker
        fill = getattr(worker.model, "prefill_ahead", None) if worker is not None else None
        if fill is not None and worker.focus is None:
            fill([worker.messages(plan.segments[i], CommunicationUnit()) for i in plan.order])

    def run(self, ctx: ReadingContext, question: str | None) -> Result:
        plan = self.plan(ctx, question)
        self.prefill_ahead(plan)
        final, reused = run_graph(plan.graph, plan.thread_id, initial_state(), steps=len(plan.segments) + 1,
                                  fresh=ctx.fresh)
        return self.result(ctx, plan, final, reused)

    async def arun(self, ctx: ReadingContext, question: str | None) -> Result:
        plan = self.plan(ctx, question)
        await asyncio.to_thread(self.prefill_ahead, plan)
        final, reused = await arun_graph(plan.graph, plan.thread_id, initial_state(), steps=len(plan.segments) + 1,
                                         fresh=ctx.fresh)
        return self.result(ctx, plan, final, reused)

    def thread_ids(self, ctx: ReadingContext, question: str | None) -> list[str]:
        return [self.plan(ctx, question).thread_id]

    def result(self, ctx: ReadingContext, plan: ChainRun, final: dict[str, Any], reused: bool) -> Result:
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
