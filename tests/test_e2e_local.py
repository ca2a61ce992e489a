"""End to end with the real embedded model on a shared book: a Chain-of-Agents question over many segments, with
its events and the local engine's streaming. Structure, not wording. (Every other strategy runs once on the real
model in test_e2e_strategies.py.)

The smallest input that still exercises the path: a part of the book that makes several segments at a 1024-token
window. The embedded model is loaded once per test session (conftest's `embedded_model`).
"""

from __future__ import annotations

import json

import pytest

from longread import Document, Reader

from .conftest import shared_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

WINDOW = 1024
CHAIN_CHARS = 12_000  # about 3k tokens: five segments at this window


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
    reader = Reader(part(book, CHAIN_CHARS, "chain"), strategy="chain:notes=rewrite", model=embedded_model,
                    window=WINDOW)
    events, streamed = [], []
    result = reader.ask(question, on_event=events.append, on_text=streamed.append)

    n = result.segments
    assert n >= 5, "a 3k-token text at a 1024-token window needs several segments"
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
    # The engine streamed the manager's answer, and the pieces make up the text it returned; only tokens that a loop
    # could still remove wait (a few at most in ordinary text), so the answer arrives about a token at a time.
    assert "".join(streamed).strip() == result.answer.strip()
    if result.calls[-1].completion_tokens >= 6:
        assert len(streamed) >= result.calls[-1].completion_tokens // 3
    for citation in result.citations:
        assert 0 <= citation.start < citation.end <= len(text)


def test_the_grounded_chain_with_the_embedded_model(embedded_model, book, question):
    """Whatever the 135M model writes, only checked claims reach the manager, and the summary passes its checks."""
    from longread import grounding

    document = part(book, 4_000, "grounded")
    reader = Reader(document, strategy="chain", model=embedded_model, window=WINDOW)
    result = reader.ask(question)
    assert [c.agent for c in result.calls if c.agent == "worker"] and result.answer.strip()
    for call in result.calls:
        assert call.prompt_tokens + call.max_new_tokens <= WINDOW
    for claim in result.extras["claims"]:  # every kept claim sits on a sentence of the document
        for start, end in claim["spans"]:
            assert document.text[start:end].strip() and document.text[start:end] in claim["source"]
    assert all(d["reason"] for d in result.extras["dropped"])
    if result.extras["not_found"]:
        assert "manager" not in {c.agent for c in result.calls}
    summary = reader.summarize()
    assert summary.text.strip()
    assert grounding.repeated_sentences(summary.text) == []
    if summary.extras["claims"]:  # a summary written from checked claims names nothing the document lacks
        assert grounding.unsupported_entities(summary.text, document.text) == []
