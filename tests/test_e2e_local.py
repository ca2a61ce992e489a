"""End to end with the real embedded model on a shared book, one run per way of reading: structure, not wording.

The smallest inputs that still exercise each path: a part of the book that makes several segments at a
1024-token window for the chain, a shorter part for the other strategies (multipath with two orders). The
embedded model is loaded once per test session (conftest's `embedded_model`).
"""

from __future__ import annotations

import json

import pytest

from longread import Document, Reader

from .conftest import shared_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

WINDOW = 1024
CHAIN_CHARS = 16_000  # about 4k tokens: six or more segments at this window
STRATEGY_CHARS = 3_500  # about 900 tokens: two segments, so every chain passes notes on; fits `full`'s one call


@pytest.fixture(scope="module")
def book() -> str:
    return shared_file("books/murders_in_the_rue_morgue.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def question() -> str:
    rows = [json.loads(line) for line in shared_file("qa/longbench_v2_books.jsonl").read_text().splitlines()]
    return next(q for q in rows if q["book"].endswith("murders_in_the_rue_morgue.txt"))["question"]


def part(book: str, chars: int, title: str) -> Document:
    return Document(text=book[:chars], source=f"rue_morgue[:{chars}]", title=title)


def test_a_chain_of_agents_question_with_the_embedded_model(embedded_model, book, question):
    reader = Reader(part(book, CHAIN_CHARS, "chain"), model=embedded_model, window=WINDOW)
    events = []
    result = reader.ask(question, on_event=events.append)

    n = result.segments
    assert n >= 6, "a 4k-token text at a 1024-token window needs several segments"
    # Every segment was read, in order, by exactly one worker; then one manager call.
    assert [c.segment for c in result.calls if c.agent == "worker"] == list(range(n))
    assert [c.agent for c in result.calls][-1] == "manager" and len(result.calls) == n + 1
    finished = [e for e in events if e.kind == "call_finished"]
    assert [e.segment for e in finished] == [c.segment for c in result.calls]
    assert [e.kind for e in events] == ["call_started", "call_finished"] * len(result.calls)
    # The window invariant held for every real call, counted with the model's own tokenizer.
    for call in result.calls:
        assert call.prompt_tokens + call.max_new_tokens <= WINDOW
        assert 0 < call.completion_tokens <= call.max_new_tokens
    # Every document token was read once: the segments cover the whole text.
    text = reader.document.text
    segments = reader.segments(reader.budget("query", question).segment_tokens)
    assert "".join("".join(text[s.start : s.end] for s in segments).split()) == "".join(text.split())
    assert result.answer.strip()
    for citation in result.citations:
        assert 0 <= citation.start < citation.end <= len(text)


@pytest.mark.parametrize("strategy", ["lookback", "multipath:paths=2", "rag", "truncate", "full", "auto"])
def test_every_other_strategy_with_the_embedded_model(embedded_model, book, question, strategy):
    document = part(book, STRATEGY_CHARS, strategy)
    reader = Reader(document, model=embedded_model, window=WINDOW, strategy=strategy)
    streamed: list[str] = []
    result = reader.ask(question, on_text=streamed.append)

    assert result.strategy.split(":")[0] == strategy.split(":")[0]
    assert result.calls and result.answer.strip()
    window = embedded_model.context_window if strategy == "full" else WINDOW
    for call in result.calls:
        assert call.prompt_tokens + call.max_new_tokens <= window
        assert 0 < call.completion_tokens <= call.max_new_tokens
    # The local engine streamed the final answer: the pieces make up the text it returned.
    assert "".join(streamed).strip() == result.answer.strip()
    for citation in result.citations:
        assert 0 <= citation.start < citation.end <= len(document.text)
