"""End to end with the real embedded model on a shared book: structure, not wording."""

from __future__ import annotations

import json

import pytest

from longread import Reader

from .conftest import shared_file

pytestmark = pytest.mark.slow

WINDOW = 2048


def test_question_over_a_whole_book_with_the_embedded_model(embedded_model):
    book = shared_file("books/murders_in_the_rue_morgue.txt")
    questions = [json.loads(line) for line in shared_file("qa/longbench_v2_books.jsonl").read_text().splitlines()]
    question = next(q for q in questions if q["book"].endswith("murders_in_the_rue_morgue.txt"))["question"]

    reader = Reader(book, model=embedded_model, window=WINDOW)
    events = []
    result = reader.ask(question, on_event=events.append)

    n = result.segments
    assert n >= 8, "a 20k-token book at a 2048-token window needs many segments"
    # Every segment was read, in order, by exactly one worker; then one manager call.
    assert [c.segment for c in result.calls if c.agent == "worker"] == list(range(n))
    assert [c.agent for c in result.calls][-1] == "manager" and len(result.calls) == n + 1
    assert [e.segment for e in events] == [c.segment for c in result.calls]
    # The window invariant held for every real call, counted with the model's own tokenizer.
    for call in result.calls:
        assert call.prompt_tokens + call.max_new_tokens <= WINDOW
        assert 0 < call.completion_tokens <= call.max_new_tokens
    # Every document token was read once: the segments cover the whole book.
    text = reader.document.text
    segments = reader.segments(reader.budget("query", question).segment_tokens)
    assert "".join("".join(text[s.start : s.end] for s in segments).split()) == "".join(text.split())
    assert result.answer.strip()
    for citation in result.citations:
        assert 0 <= citation.start < citation.end <= len(text)
