"""`multipath`: Chain-of-Agents over k reading orders, then a judge (Zhang et al., NeurIPS 2024, section 5:
"multi-path Chain-of-Agents" with an LLM judge).

Path 0 reads forward, path 1 backward, paths 2.. in seeded shuffles (seed = the path's number, so a rerun reads
the same orders and resumes). Each path is a whole chain with its own checkpoint thread; the paths are
independent, so they run concurrently (threads for `run`, tasks for `arun`: backends/calls.py's Together) where
the backend allows it. The judge sees every path's answer with the notes it came from and picks or merges them;
for a summary it merges the k summaries. Only path 0 writes to memory, so the stream does not hold k copies of the
same notes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from ..agents import Judge
from ..backends.base import Completion
from ..backends.calls import Steps, Together
from ..results import CallRecord, Result, unique_citations
from .base import ReadingContext, StepsStrategy
from .chain import ChainRun, ChainStrategy
from .runs import CallState, graph_run, one_call_graph


def reading_orders(segments: int, paths: int) -> list[list[int]]:
    """Forward, backward, then seeded shuffles; an order already taken is not read twice (a short document
    has fewer distinct orders than paths)."""
    forward = list(range(segments))
    orders = [forward, forward[::-1]]
    seed = 2
    while len(orders) < paths and seed < paths + 64:
        order = forward[:]
        random.Random(seed).shuffle(order)
        orders.append(order)
        seed += 1
    unique: list[list[int]] = []
    for order in orders[: max(paths, 1)]:
        if order not in unique:
            unique.append(order)
    return unique


@dataclass
class MultipathStrategy(StepsStrategy):
    """k chains over different reading orders, and a judge over their answers."""

    name: ClassVar[str] = "multipath"
    paths: int = 3
    lookback: bool = False
    guided: bool = False
    notes: str = "claims"

    def __post_init__(self) -> None:
        if self.paths < 1:
            raise ValueError(f"multipath needs at least one path, got {self.paths}")

    @property
    def spec(self) -> str:
        options = [f"paths={self.paths}"] + [f"{k}=true" for k in ("lookback", "guided") if getattr(self, k)]
        options += [f"notes={self.notes}"] if self.notes != "claims" else []
        return "multipath:" + ",".join(options)

    def _plans(self, ctx: ReadingContext, question: str | None) -> list[ChainRun]:
        chain = ChainStrategy(lookback=self.lookback, guided=self.guided, notes=self.notes)
        first = chain.plan(ctx, question)
        orders = reading_orders(len(first.segments), self.paths)
        return [chain.plan(ctx, question, order=order, path=i, memory=i == 0) for i, order in enumerate(orders)]

    def _judge(self, ctx: ReadingContext, plans: list[ChainRun]) -> Judge:
        first = plans[0]
        return Judge(ctx.model, ctx.prompts, first.mode, first.question, ctx.window, first.budget.answer_tokens)

    def _candidates(self, plans: list[ChainRun], finals: list[dict[str, Any]]) -> list[tuple[str, str]]:
        # A summary's notes are the running summary itself: the judge reads the k summaries alone.
        summary = plans[0].mode == "summary"
        return [(f.get("output", ""), "" if summary else f.get("notes", {}).get("text", "")) for f in finals]

    def _judge_graph(self, ctx: ReadingContext, plans: list[ChainRun], finals: list[dict[str, Any]]) -> Any:
        judge, candidates = self._judge(ctx, plans), self._candidates(plans, finals)
        segments = len(plans[0].segments)

        def state(completion: Completion) -> CallState:
            record = CallRecord.of("judge", None, completion, judge.answer_tokens)
            ctx.finished(record, segments)
            return {"output": completion.text, "calls": [record.to_dict()]}

        def call() -> Steps[CallState]:
            ctx.emit("call_started", "judge", None, segments)
            return state((yield from judge.judging(candidates, on_text=ctx.on_text)))

        return one_call_graph(call, checkpointer=ctx.checkpointer, name="judge")

    def _judge_thread(self, ctx: ReadingContext, plans: list[ChainRun]) -> str:
        return ctx.thread_id("judge", plans[0].mode, plans[0].question, self.spec)

    def thread_ids(self, ctx: ReadingContext, question: str | None) -> list[str]:
        plans = self._plans(ctx, question)
        return [p.thread_id for p in plans] + [self._judge_thread(ctx, plans)]

    def reading(self, ctx: ReadingContext, question: str | None) -> Steps[Result]:
        plans = self._plans(ctx, question)
        # the paths at once: a thread each under `run`, a task each under `arun`
        outcomes = yield Together([graph_run(p.graph, p.thread_id, p.initial(), steps=p.steps, fresh=ctx.fresh,
                                             concurrency=p.concurrency) for p in plans], thread_name="longread-path")
        if len(plans) == 1 or all(final.get("not_found") for final, _ in outcomes):
            return self._single(ctx, plans, outcomes)
        finals = [final for final, _ in outcomes]
        judged, _ = yield from graph_run(self._judge_graph(ctx, plans, finals), self._judge_thread(ctx, plans), {},
                                         steps=1, fresh=ctx.fresh)
        return self._result(ctx, plans, outcomes, judged)

    def _single(self, ctx: ReadingContext, plans: list[ChainRun], outcomes: list[tuple[dict[str, Any], bool]]
                ) -> Result:
        """One distinct order (a one-segment document), or no path found anything: the first path's answer is the
        answer, with every path's calls; no judge call (a judge of "not found" answers could only invent)."""
        chain = ChainStrategy(lookback=self.lookback, guided=self.guided, notes=self.notes)
        result = chain.result(ctx, plans[0], *outcomes[0])
        calls = [call for plan, outcome in zip(plans, outcomes) for call in chain.result(ctx, plan, *outcome).calls]
        if ctx.on_text is not None:  # the paths do not stream (only a judge's answer would): this is the answer
            ctx.on_text(result.text)
        return ctx.result(self.spec, result.mode, result.question, result.text, citations=result.citations,
                          segments=result.segments, calls=calls, window=result.window, notes=result.notes,
                          document_tokens=result.document_tokens, extras={**result.extras, "paths": len(plans)})

    def _result(self, ctx: ReadingContext, plans: list[ChainRun], outcomes: list[tuple[dict[str, Any], bool]],
                judged: dict[str, Any]) -> Result:
        chain = ChainStrategy(lookback=self.lookback, guided=self.guided, notes=self.notes)
        results = [chain.result(ctx, plan, final, reused) for plan, (final, reused) in zip(plans, outcomes)]
        calls = [call for r in results for call in r.calls] + [CallRecord.from_dict(c) for c in judged.get("calls", [])]
        first = results[0]
        extras = {
            "paths": len(plans),
            "orders": [p.order for p in plans],
            "path_answers": [r.text for r in results],
            "path_notes": [r.notes for r in results],
            "reused": all(reused for _, reused in outcomes),
        }
        return ctx.result(
            self.spec, first.mode, first.question, judged.get("output", ""),
            citations=unique_citations([c for r in results for c in r.citations]), segments=first.segments,
            calls=calls, window=first.window, notes="\n\n".join(f"(path {i}) {r.notes}" for i, r in enumerate(results)),
            document_tokens=first.document_tokens, extras=extras,
        )
