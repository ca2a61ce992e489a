"""Summarize a document from Python (a path, a string of text, or a longread.Document).

    .venv/bin/python examples/summarize_book.py [PATH] [--model MODEL]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import longread

HERE = Path(__file__).resolve().parent


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", default=str(HERE / "lighthouse_keeper.md"))
    parser.add_argument("--model", default="local")
    parser.add_argument("--window", type=int, default=2048)
    args = parser.parse_args()

    # The async twin; longread.summarize(...) is the same call, synchronous.
    result = await longread.asummarize(args.path, model=args.model, window=args.window)
    print(result.summary)
    print(f"\n[{result.segments} segments, {result.usage.calls} calls, {result.usage.seconds:.1f} s]")


if __name__ == "__main__":
    asyncio.run(main())
