"""Ask a question about a document from Python.

    .venv/bin/python examples/ask_question.py [PATH] [QUESTION] [--model MODEL]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import longread

HERE = Path(__file__).resolve().parent


def show(event: longread.ReadEvent) -> None:
    """One line per finished call (events also come when a call starts, and when `auto` chooses its way)."""
    if event.kind == "call_finished":
        where = f" of part {event.segment + 1}/{event.segments}" if event.segment is not None else ""
        print(f"  {event.agent}{where}: {event.record.completion_tokens} tokens in {event.record.seconds:.1f} s",
              flush=True)
    elif event.kind == "routed":
        print(f"  auto: {event.message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", default=str(HERE / "lighthouse_keeper.md"))
    parser.add_argument("question", nargs="?", default="What saved the steamer Margaret Ellen during the storm?")
    parser.add_argument("--model", default="local")
    parser.add_argument("--window", type=int, default=2048)
    args = parser.parse_args()

    reader = longread.Reader(args.path, model=args.model, window=args.window)
    result = reader.ask(args.question, on_event=show)
    print("\nAnswer:", result.answer)
    for citation in result.citations:
        print(f"  cites segment {citation.segment}: chars {citation.start}-{citation.end}")
    usage = result.usage
    print(f"{result.segments} segments, {usage.calls} calls, {usage.prompt_tokens} prompt tokens, "
          f"{usage.completion_tokens} completion tokens, {usage.seconds:.1f} s, ${usage.cost_usd:.4f}")


if __name__ == "__main__":
    main()
