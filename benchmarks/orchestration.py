"""Orchestration overhead and input-token amplification of Chain-of-Agents, with an instant MockModel.

A full pass over four concatenated copies of moby_dick.txt (about 1.2M tokens) at W = 8192 and 4096.
- ms per worker call: wall time of the whole LangGraph run (graph, checkpoints, records, the window check) per
  worker call; the baseline is a bare Python loop making the same worker calls with the same prompts, in the same
  run; overhead = the difference. The mock answers instantly but still counts each prompt with tiktoken.
- amplification: total prompt tokens of all calls / document tokens (1.0 = every token read once).
Every CU is as long as its cap (the worst case for amplification).

    .venv/bin/python benchmarks/orchestration.py
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, shared_path, write_record  # noqa: E402

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from longread import Reader  # noqa: E402
from longread.agents import CommunicationUnit, Worker  # noqa: E402
from longread.testing import MockModel  # noqa: E402

QUESTION = "What does Ahab want, and what does it cost the crew of the Pequod?"
REPEATS = 3  # the minimum of 3 runs, ours and the baseline interleaved, so load spikes on a shared machine cancel


def bare_loop(reader: Reader, model: MockModel) -> float:
    """The baseline: the same worker calls in a plain loop, no graph, no checkpoint, no records."""
    budget = reader.budget("query", QUESTION)
    worker = Worker(model, reader.prompts, "query", QUESTION, budget)
    notes = CommunicationUnit()
    started = time.perf_counter()
    for segment in reader.segments(budget.segment_tokens):
        notes = worker.read(segment, notes).notes
    return time.perf_counter() - started


def main() -> None:
    text = "\n\n".join([shared_path("books/moby_dick.txt").read_text(encoding="utf-8")] * 4)
    rows = []
    for window in (8192, 4096):
        for saver_name in ("none", "memory", "sqlite"):
            with tempfile.TemporaryDirectory() as tmp:
                checkpointer = None
                if saver_name == "memory":
                    checkpointer = InMemorySaver()
                elif saver_name == "sqlite":
                    checkpointer = SqliteSaver(sqlite3.connect(Path(tmp) / "c.sqlite", check_same_thread=False))
                probe = MockModel()
                notes_cap = Reader("x", model=probe, window=window).budget("query", QUESTION).notes_tokens
                model = MockModel(completion_tokens=notes_cap)
                reader = Reader(text, model=model, window=window, checkpointer=checkpointer)
                started = time.perf_counter()
                budget = reader.budget("query", QUESTION)
                segments = reader.segments(budget.segment_tokens)
                segmenting = time.perf_counter() - started
                ours_runs, baseline_runs = [], []
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    result = reader.ask(QUESTION)
                    ours_runs.append(time.perf_counter() - started)
                    baseline_runs.append(bare_loop(reader, MockModel(completion_tokens=notes_cap)))
                ours, baseline = min(ours_runs), min(baseline_runs)
                workers = sum(1 for c in result.calls if c.agent == "worker")
                doc_tokens = sum(s.tokens for s in segments)
                rows.append(
                    {
                        "window": window,
                        "checkpointer": saver_name,
                        "document_tokens": doc_tokens,
                        "segments": len(segments),
                        "worker_calls": workers,
                        "segmenting_s": round(segmenting, 3),
                        "chain_s": round(ours, 3),
                        "baseline_loop_s": round(baseline, 3),
                        "ms_per_worker_call": round(1000 * ours / workers, 3),
                        "baseline_ms_per_worker_call": round(1000 * baseline / workers, 3),
                        "overhead_ms_per_worker_call": round(1000 * (ours - baseline) / workers, 3),
                        "prompt_tokens": result.usage.prompt_tokens,
                        "amplification": round(result.usage.prompt_tokens / doc_tokens, 4),
                        "max_call_tokens": max(c.prompt_tokens + c.max_new_tokens for c in result.calls),
                    }
                )
    table = Table(title=f"Chain-of-Agents orchestration, 4x Moby Dick, MockModel ({machine()})")
    for column in ("window", "checkpointer", "document_tokens", "segments", "ms_per_worker_call",
                   "baseline_ms_per_worker_call", "overhead_ms_per_worker_call", "amplification", "max_call_tokens"):
        table.add_column(column.replace("_", " "), justify="right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in (
            "window", "checkpointer", "document_tokens", "segments", "ms_per_worker_call",
            "baseline_ms_per_worker_call", "overhead_ms_per_worker_call", "amplification", "max_call_tokens")))
    Console(width=200).print(table)
    path = write_record("orchestration", ".venv/bin/python benchmarks/orchestration.py", rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
