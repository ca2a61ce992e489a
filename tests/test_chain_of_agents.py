"""Chain-of-Agents as the paper writes it (notes rewritten by each worker, `chain:notes=rewrite`) with a recording
MockModel: the exact calls, the guard, resume, and the window invariant. The grounded chain (the default notes,
checked claims) has its own tests in test_grounded_chain.py."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver

from longread import Reader, WindowTooSmall
from longread.agents import NOTHING_RELEVANT
from longread.testing import MockModel

REWRITE = "chain:notes=rewrite"

PARAGRAPH = (
    "The harbour master counted the boats each morning at dawn. He wrote the number in a green book. "
    "On windy days fewer boats went out, and he wrote that down too. "
)


def long_text(paragraphs: int) -> str:
    return "\n\n".join(f"Paragraph {i}. " + PARAGRAPH * 3 for i in range(paragraphs))


def user_content(call) -> str:
    return call.messages[-1]["content"]


def notes_in(call) -> str:
    """The previous notes a worker call received."""
    return user_content(call).split("Notes on the earlier parts:\n", 1)[1].split("\n\nQuestion:", 1)[0]


def test_query_mode_calls_n_workers_then_one_manager_each_worker_gets_previous_notes():
    model = MockModel(completion_tokens=20)
    reader = Reader(long_text(40), strategy=REWRITE, model=model, window=1024)
    result = reader.ask("How many boats went out?")

    n = result.segments
    assert n >= 3
    assert len(model.calls) == n + 1
    assert [c.agent for c in result.calls] == ["worker"] * n + ["manager"]
    assert [c.segment for c in result.calls[:n]] == list(range(n))
    worker_calls, manager_call = model.calls[:n], model.calls[n]
    # Worker i reads segment i and receives CU i-1 verbatim; the first receives none.
    segments = reader.segments(reader.budget("query", "How many boats went out?").segment_tokens)
    assert "(none yet" in user_content(worker_calls[0])
    for i, call in enumerate(worker_calls):
        assert segments[i].text in user_content(call)
        assert "How many boats went out?" in user_content(call)
        assert call.max_new_tokens == result.calls[i].max_new_tokens
        if i:
            previous_cu = MockModel._derived_text(worker_calls[i - 1].messages, 20).strip()
            assert notes_in(call) == previous_cu
    # The manager gets the last CU and the question, and its text is the answer.
    last_cu = MockModel._derived_text(worker_calls[-1].messages, 20).strip()
    assert last_cu in user_content(manager_call)
    assert "How many boats went out?" in user_content(manager_call)
    assert result.answer == MockModel._derived_text(manager_call.messages, 20)
    assert result.usage.calls == n + 1
    assert result.usage.prompt_tokens == sum(c.prompt_tokens for c in model.calls)


def test_summary_mode_asks_for_long_notes_and_a_summary():
    model = MockModel(completion_tokens=10)
    reader = Reader(long_text(30), strategy=REWRITE, model=model, window=1024)
    query_budget = reader.budget("query", "q?")
    result = reader.summarize()
    assert result.mode == "summary" and result.question is None
    assert [c.agent for c in result.calls][-1] == "manager"
    worker_caps = {c.max_new_tokens for c in result.calls if c.agent == "worker"}
    assert worker_caps == {reader.budget("summary", None).notes_tokens}
    assert worker_caps.pop() > query_budget.notes_tokens  # summary notes are relatively long
    assert "summary" in user_content(model.calls[-1]).lower()
    assert "Question:" not in user_content(model.calls[0])
    assert result.to_dict()["summary"] == result.text


def test_worker_that_finds_nothing_passes_previous_notes_on_unchanged():
    scripted = {0: "Note one: the harbour master keeps a green book.", 1: NOTHING_RELEVANT, 2: "I don't know."}
    model = MockModel(completion_tokens=12, replies={"worker": lambda call: scripted.get(call.segment)})
    result = Reader(long_text(40), strategy=REWRITE, model=model, window=1024).ask("What colour is the book?")
    assert result.segments >= 4
    # Workers 3 and 4 receive worker 1's notes, not "NOTHING RELEVANT" or "I don't know".
    assert notes_in(model.calls[1]) == "Note one: the harbour master keeps a green book."
    assert notes_in(model.calls[2]) == "Note one: the harbour master keeps a green book."
    assert notes_in(model.calls[3]) == "Note one: the harbour master keeps a green book."
    assert NOTHING_RELEVANT not in notes_in(model.calls[4]) and "I don't know" not in notes_in(model.calls[4])
    assert [c.passed_on for c in result.calls[:3]] == [False, True, True]
    # Segments 2 and 3 gave no evidence, so they are not cited.
    cited = {c.segment for c in result.citations}
    assert 0 in cited and 1 not in cited and 2 not in cited


def test_citations_are_char_spans_of_the_cited_segments():
    text = long_text(20)
    model = MockModel(completion_tokens=8)
    reader = Reader(text, strategy=REWRITE, model=model, window=1024)
    result = reader.ask("Who counts boats?")
    assert result.citations, "every worker wrote notes, so every segment is evidence"
    for citation in result.citations:
        assert 0 <= citation.start < citation.end <= len(text)
        assert text[citation.start : citation.end].strip()
    assert [c.segment for c in result.citations] == list(range(result.segments))


def test_window_too_small_is_an_error_before_any_call():
    model = MockModel()
    with pytest.raises(WindowTooSmall, match="too small"):
        Reader(long_text(5), strategy=REWRITE, model=model, window=200).ask("What is written in the green book each morning?")
    assert model.call_count == 0


def test_resume_after_failure_does_not_repeat_finished_worker_calls():
    checkpointer = InMemorySaver()
    model = MockModel(completion_tokens=10, fail_on_calls={4})
    reader = Reader(long_text(40), strategy=REWRITE, model=model, window=1024, checkpointer=checkpointer)
    with pytest.raises(RuntimeError, match="injected failure at call 4"):
        reader.ask("How many boats?")
    assert len(model.calls) == 3  # workers 0..2 finished before the failure

    result = reader.ask("How many boats?")  # same thread id: resumes at segment 3
    n = result.segments
    assert len(model.calls) == n + 1  # no finished worker call was repeated
    assert [c.segment for c in result.calls if c.agent == "worker"] == list(range(n))
    assert [c.segment for c in model.calls[:n]] == list(range(n))
    assert [c.agent for c in model.calls] == ["worker"] * n + ["manager"]

    # A finished thread is kept: asking again returns its result without a call (nothing paid for is paid again)...
    again = reader.ask("How many boats?")
    assert len(model.calls) == n + 1
    assert again.text == result.text and again.calls == result.calls and again.extras["reused"]
    # ...until it is forgotten: then the chain reads everything again.
    reader.forget("How many boats?")
    fresh = reader.ask("How many boats?")
    assert len(model.calls) == 2 * (n + 1) and not fresh.extras["reused"]


def test_async_twin_makes_the_same_calls():
    sync_model, async_model = MockModel(completion_tokens=9), MockModel(completion_tokens=9)
    text = long_text(25)
    sync_result = Reader(text, strategy=REWRITE, model=sync_model, window=1024).ask("Where?")
    async_result = asyncio.run(Reader(text, strategy=REWRITE, model=async_model, window=1024).aask("Where?"))
    assert [c.messages for c in sync_model.calls] == [c.messages for c in async_model.calls]
    assert async_result.text == sync_result.text


def test_recursion_limit_follows_segment_count():
    """A book needs far more than LangGraph's default 25 steps."""
    model = MockModel(completion_tokens=4)
    result = Reader(long_text(200), strategy=REWRITE, model=model, window=600).ask("Boats?")
    assert result.segments > 30
    assert len(model.calls) == result.segments + 1


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(st.lists(words, min_size=1, max_size=60).map(" ".join), min_size=1, max_size=30).map("\n\n".join),
    question=st.lists(words, min_size=1, max_size=30).map(" ".join),
    window=st.integers(min_value=256, max_value=4096),
    completion=st.integers(min_value=1, max_value=600),
    summary=st.booleans(),
)
def test_every_call_fits_its_window(body, question, window, completion, summary):
    if not body.strip():
        return
    model = MockModel(completion_tokens=completion)
    reader = Reader(body, strategy=REWRITE, model=model, window=window)
    try:
        result = reader.summarize() if summary else reader.ask(question)
    except WindowTooSmall:
        assert model.call_count == 0
        return
    assert model.calls, "a document with text gets at least one call"
    for call in model.calls:
        assert call.prompt_tokens + call.max_new_tokens <= window
        assert call.prompt_tokens == model.count_prompt_tokens(call.messages)
    assert result.window == window
