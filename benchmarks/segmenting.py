"""Segmentation speed against the floor: a raw tiktoken encode of the same text (every token must be produced once).

    .venv/bin/python benchmarks/segmenting.py

Segments moby_dick.txt (../shared/data/books) with o200k_base at budgets 3000 and 8000, and times a plain
`encode` of the whole text as the baseline, best of 3 runs each, runs interleaved in one process so that load from
other processes hits every case alike. `segment_text` encodes the text in one thread on a machine with fewer than
4 cores (in up to 4 parallel pieces otherwise); the "2 threads" rows show what pieces do here. Target: ours / raw
<= 1.5.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, shared_path, write_record  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from longread.segmenting import segment_text  # noqa: E402
from longread.tokenizers import TiktokenTokenizer  # noqa: E402

RUNS = 3
BUDGETS = (3000, 8000)
COMMAND = ".venv/bin/python benchmarks/segmenting.py"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    text = shared_path("books/moby_dick.txt").read_text(encoding="utf-8")
    tokenizer = TiktokenTokenizer("o200k_base")
    started = time.perf_counter()
    tokenizer.token_starts("warm up")  # builds the token byte-length table, once per process
    table_seconds = time.perf_counter() - started
    parallel = TiktokenTokenizer("o200k_base")
    parallel.token_starts = functools.partial(parallel.token_starts, threads=2)  # type: ignore[method-assign]
    parallel.token_starts("warm up")
    encoding = tokenizer._enc
    tokens = len(encoding.encode(text, disallowed_special=()))

    # (case, budget, threads) -> function to time
    cases = {("raw encode", None, 1): lambda: encoding.encode(text, disallowed_special=())}
    for budget in BUDGETS:
        cases[("segment_text", budget, 1)] = functools.partial(segment_text, text, tokenizer, budget)
        cases[("segment_text", budget, 2)] = functools.partial(segment_text, text, parallel, budget)
    best = {key: float("inf") for key in cases}
    for _ in range(RUNS):
        for key, fn in cases.items():
            best[key] = min(best[key], timed(fn))

    raw = best[("raw encode", None, 1)]
    rows = []
    for (case, budget, threads), seconds in best.items():
        segments = segment_text(text, tokenizer, budget) if budget else None
        rows.append(
            {
                "case": case,
                "budget": budget,
                "threads": threads,
                "tokens": tokens,
                "segments": len(segments) if segments else None,
                "fill": round(sum(s.tokens for s in segments) / (len(segments) * budget), 3) if segments else None,
                "seconds": round(seconds, 4),
                "tokens_per_s": round(tokens / seconds),
                "raw_encode_seconds": round(raw, 4),
                "ratio_vs_raw_encode": round(seconds / raw, 3),
            }
        )
    table = Table(title=f"Segmenting moby_dick.txt, o200k_base, best of {RUNS} ({machine()})")
    columns = ("case", "budget", "threads", "tokens", "segments", "fill", "seconds", "tokens_per_s",
               "ratio_vs_raw_encode")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column == "case" else "right")
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    Console(width=140).print(table)
    print(f"once per process: token byte-length table {table_seconds:.3f} s")
    print(f"wrote {write_record('segmenting', COMMAND, rows)}")


if __name__ == "__main__":
    main()
