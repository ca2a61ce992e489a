"""Follow-up questions from memory against a fresh read, accuracy and cost side by side (issue: evaluation).

For each document of a cases file (QuALITY: several questions per article), in question order:
- **memory**: one `Reader` with a memory stream; the first question reads the document (the strategy's chain
  archives its notes), every later one goes through Self-Controlled Memory's rule: answered from the notes in one
  call, or sent back to the document when the reply is INSUFFICIENT;
- **fresh**: every question read by the same strategy from scratch, no memory (the baseline, same run).
Scores come from the eval harness (`longread.eval.runner.case_record`), so they are `longread eval`'s.
Rows: per question, both arms, with where the memory arm's answer came from and its calls/tokens/seconds.

    .venv/bin/python benchmarks/memory_quality.py CASES.jsonl --model hf:DIR --strategy lookback:guided=true,notes=map \
        --documents 3 --window 4096
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases")
    ap.add_argument("--model", required=True)
    ap.add_argument("--strategy", default="chain:notes=map")
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--documents", type=int, default=3)
    ap.add_argument("--questions", type=int, default=4)
    a = ap.parse_args()

    from longread import Reader
    from longread.backends import get_model
    from longread.eval.cases import load_cases
    from longread.eval.runner import Setting, case_record, question_for
    from longread.memory import MemoryStream, MiniLMEmbedder

    model = get_model(a.model)
    embedder = MiniLMEmbedder()
    by_document = defaultdict(list)
    for case in load_cases(a.cases):
        by_document[case.document_key].append(case)
    rows = []
    setting = Setting(a.strategy, a.model, a.window)
    for key in list(by_document)[: a.documents]:
        cases = by_document[key][: a.questions]
        document = cases[0].load_document()
        with tempfile.TemporaryDirectory() as folder:
            stream = MemoryStream(Path(folder) / "memory.sqlite", embedder=embedder, tokenizer=model.tokenizer)
            with Reader(document, model=model, window=a.window, strategy=a.strategy, memory=stream,
                        embedder=embedder) as remembering:
                for order, case in enumerate(cases):
                    for arm in ("memory", "fresh"):
                        started = time.monotonic()
                        reader = remembering if arm == "memory" else Reader(
                            document, model=model, window=a.window, strategy=a.strategy, embedder=embedder)
                        result = reader.ask(question_for(case))
                        record = case_record(case, setting, result=result, seconds=time.monotonic() - started)
                        row = {"document": key, "case": case.id, "order": order, "arm": arm, "score": record.score,
                               "answered_from": result.extras.get("answered_from", "read"),
                               "calls": len(result.calls), "prompt_tokens": result.usage.prompt_tokens,
                               "completion_tokens": result.usage.completion_tokens,
                               "seconds": round(record.seconds, 2)}
                        rows.append(row)
                        print(row, flush=True)
    summary = []
    for arm in ("memory", "fresh"):
        for follow in (False, True):
            chosen = [r for r in rows if r["arm"] == arm and (r["order"] > 0) == follow]
            if chosen:
                n = len(chosen)
                summary.append({
                    "arm": arm, "questions": "follow-ups" if follow else "first", "n": n,
                    "score": round(sum(r["score"] or 0 for r in chosen) / n, 3),
                    "from_memory": sum(r["answered_from"] == "memory" for r in chosen),
                    "calls": round(sum(r["calls"] for r in chosen) / n, 2),
                    "prompt_tokens": round(sum(r["prompt_tokens"] for r in chosen) / n),
                    "seconds": round(sum(r["seconds"] for r in chosen) / n, 1),
                })
    for s in summary:
        print(s)
    command = "benchmarks/memory_quality.py " + " ".join(sys.argv[1:])
    write_record("memory-quality", command, summary + rows, machine())


if __name__ == "__main__":
    main()
