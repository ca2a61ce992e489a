"""Every strategy with a recording MockModel routed by agent role: the exact calls, what each prompt holds, the
window invariant, checkpoints, events, streaming and the registry."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver

from longread import Document, DocumentTooLong, Reader, StrategyError, WindowTooSmall
from longread.agents import NOTHING_RELEVANT
from longread.testing import MockModel
from longread.workflows import available_strategies, get_strategy, register_strategy
from longread.workflows.chain import ChainStrategy
from longread.workflows.multipath import MultipathStrategy, reading_orders

ALL = ["chain", "lookback", "multipath", "rag", "truncate", "full", "auto"]
# Each paragraph carries its own number and colour, so a chunk or a segment can be told apart from the others.
COLOURS = "amber blue crimson dun ebony fawn green hazel indigo jade khaki lilac".split()


def book(paragraphs: int = 40) -> str:
    return "\n\n".join(
        f"Paragraph {i}. The harbour master painted boat number {i} {COLOURS[i % len(COLOURS)]} at dawn. "
        "He wrote the colour in a green book and watched the tide come in over the sand. " * 2
        for i in range(paragraphs)
    )


def user(call) -> str:
    return call.messages[-1]["content"]


QUESTION = "What colour was boat number 17 painted?"


# -- chain ---------------------------------------------------------------------------------------------------------
def test_an_all_nothing_relevant_chain_says_not_found_and_never_calls_the_manager():
    model = MockModel(replies={"worker": NOTHING_RELEVANT})
    result = Reader(book(), strategy="chain:notes=rewrite", model=model, window=1024).ask(QUESTION)
    n = result.segments
    assert [c.agent for c in model.calls] == ["worker"] * n  # no manager call that could invent an answer
    assert result.extras["not_found"] and result.citations == []
    assert result.text == f"The document does not say: none of its {n} parts held information about this question."
    assert all(c.passed_on for c in result.calls)


def test_the_marker_counts_only_alone_and_its_replies_are_kept():
    replies = {0: NOTHING_RELEVANT, 1: "NOTHING RELEVANT. But boat 17 was painted crimson.", 2: "  nothing relevant.  "}
    model = MockModel(replies={"worker": lambda call: replies.get(call.segment), "manager": "crimson"})
    result = Reader(book(), strategy="chain:notes=rewrite", model=model, window=1024).ask(QUESTION)
    passed = [c.passed_on for c in result.calls if c.agent == "worker"]
    assert passed[:3] == [True, False, True]
    # The reply after the marker is the note the next worker gets, without the marker.
    assert "Notes on the earlier parts:\nBut boat 17 was painted crimson." in user(model.calls_by("worker")[2])
    # Every call's reply is kept verbatim in the result (and so in the checkpoint and the JSON).
    assert [c.reply for c in result.calls][:3] == [replies[0], replies[1], replies[2]]
    assert result.to_dict()["calls"][1]["reply"] == replies[1]
    assert result.to_dict()["notes"] == result.notes


def test_lookback_gives_the_manager_the_cited_passages_within_its_window():
    window = 1024
    probe = Reader(book(), strategy="chain:notes=rewrite", model=MockModel(), window=window)
    segments = probe.segments(probe.budget("query", QUESTION).segment_tokens)
    [part] = [s.index for s in segments if "Paragraph 17." in s.text]

    def worker(call):
        return "Boat 17 was painted crimson." if call.segment == part else NOTHING_RELEVANT

    model = MockModel(replies={"worker": worker, "manager": "crimson"})
    result = Reader(book(), model=model, window=window, strategy="lookback:notes=rewrite").ask(QUESTION)
    [manager] = model.calls_by("manager")
    cited = {c.segment for c in result.citations}
    assert cited == {part} and result.extras["lookback"] == [part]
    # The manager reads source text of the cited segment, labelled with its part, and the paragraph with the
    # fact (the best passage for the question and notes) among it.
    assert f"[part {part + 1}]" in user(manager)
    assert "Paragraph 17. The harbour master painted boat number 17 fawn" in user(manager)
    assert manager.prompt_tokens + manager.max_new_tokens <= window
    # Nothing of an uncited segment is shown.
    for seg in segments:
        if seg.index not in cited:
            first_sentence = seg.text.split(". ", 2)[0]
            assert first_sentence not in user(manager).split("Notes on the document:")[0]


# -- multipath -----------------------------------------------------------------------------------------------------
def test_multipath_reads_k_orders_then_judges_the_answers_with_their_notes():
    def worker(call):
        return f"path {call.path} read part {call.segment + 1}"

    model = MockModel(replies={"worker": worker, "manager": lambda call: f"answer of path {call.path}",
                               "judge": "the judged answer"})
    result = Reader(book(), model=model, window=1024, strategy="multipath:notes=rewrite").ask(QUESTION)
    n = result.segments
    workers, managers, judges = model.calls_by("worker"), model.calls_by("manager"), model.calls_by("judge")
    assert len(workers) == 3 * n and len(managers) == 3 and len(judges) == 1
    assert len(model.calls) == 3 * n + 4 and model.calls[-1].agent == "judge"  # the judge comes last
    expected = reading_orders(n, 3)
    assert expected[0] == list(range(n)) and expected[1] == list(range(n))[::-1]
    for path in range(3):
        assert [c.segment for c in workers if c.path == path] == expected[path]
        assert [c.segment for c in result.calls if c.agent == "worker" and c.path == path] == expected[path]
    assert len({tuple(o) for o in expected}) == 3
    judge = user(judges[0])
    for path in range(3):
        assert f"answer of path {path}" in judge
        # each answer's evidence: the notes its path ended with (the last part that path read)
        assert f"path {path} read part {expected[path][-1] + 1}" in judge
    assert result.text == "the judged answer" and result.extras["path_answers"] == [f"answer of path {p}" for p in range(3)]
    assert result.usage.calls == 3 * n + 4


def test_multipath_resumes_each_path_and_repeats_no_finished_call():
    checkpointer = InMemorySaver()
    model = MockModel(completion_tokens=8, fail_on_calls={10})
    reader = Reader(book(), model=model, window=1024, strategy="multipath:paths=2,notes=rewrite", checkpointer=checkpointer)
    with pytest.raises(RuntimeError, match="injected failure at call 10"):
        reader.ask(QUESTION)
    made = len(model.calls)
    result = reader.ask(QUESTION)
    n = result.segments
    assert len(model.calls) == 2 * n + 3  # every call made once in all: 2n workers, 2 managers, 1 judge
    assert made < len(model.calls)
    again = reader.ask(QUESTION)  # finished: kept
    assert len(model.calls) == 2 * n + 3 and again.text == result.text


def test_multipath_summary_merges_the_summaries():
    model = MockModel(replies={"manager": lambda call: f"summary of path {call.path}", "judge": "merged"})
    result = Reader(book(20), model=model, window=1024, strategy="multipath:notes=rewrite").summarize()
    judge = user(model.calls_by("judge")[0])
    assert all(f"summary of path {p}" in judge for p in range(3)) and result.text == "merged"
    assert "summary" in judge.lower()


def test_reading_orders_are_distinct_and_seeded():
    assert reading_orders(1, 3) == [[0]]
    assert reading_orders(2, 5) == [[0, 1], [1, 0]]
    assert reading_orders(6, 4) == reading_orders(6, 4)
    orders = reading_orders(8, 6)
    assert len(orders) == 6 and all(sorted(o) == list(range(8)) for o in orders)


# -- one-call strategies -------------------------------------------------------------------------------------------
def test_rag_puts_the_best_chunks_in_document_order_into_one_call():
    model = MockModel(replies={"reader": "fawn"})
    result = Reader(book(), model=model, window=1024, strategy="rag").ask(QUESTION)
    [call] = model.calls
    assert call.agent == "reader" and result.text == "fawn"
    prompt = user(call)
    assert "Paragraph 17. The harbour master painted boat number 17 fawn" in prompt  # the best chunk
    assert [c.start for c in result.citations] == sorted(c.start for c in result.citations)
    assert prompt.count("[excerpt ") == len(result.citations) >= 1
    text = book()
    for c in result.citations:  # the citations are the retrieved spans, and their text is in the prompt
        assert text[c.start : c.end].strip()[:60] in prompt
    assert call.prompt_tokens + call.max_new_tokens <= 1024


def test_rag_budget_caps_the_excerpts_and_relevance_order_puts_the_best_chunk_last():
    whole = MockModel(replies={"reader": "fawn"})
    Reader(book(), model=whole, window=2048, strategy="rag").ask(QUESTION)
    capped = MockModel(replies={"reader": "fawn"})
    result = Reader(book(), model=capped, window=2048, strategy="rag:budget=700").ask(QUESTION)
    [call], [full_call] = capped.calls, whole.calls
    assert 1 <= len(result.citations) < user(full_call).count("[excerpt ")
    assert sum(capped.tokenizer.count(book()[c.start:c.end]) for c in result.citations) <= 700
    assert result.strategy == "rag:budget=700" and "Paragraph 17. The harbour master" in user(call)
    one = MockModel(replies={"reader": "fawn"})  # a budget below one chunk still reads the best chunk
    assert len(Reader(book(), model=one, window=2048, strategy="rag:budget=10").ask(QUESTION).citations) == 1

    ranked = MockModel(replies={"reader": "fawn"})
    result = Reader(book(), model=ranked, window=2048, strategy="rag:order=relevance").ask(QUESTION)
    prompt = user(ranked.calls[0])
    last = prompt.rindex("[excerpt ")
    assert "boat number 17 fawn" in prompt[last:]  # the best chunk sits next to the question
    assert [c.start for c in result.citations] != sorted(c.start for c in result.citations)
    with pytest.raises(StrategyError):
        get_strategy("rag:order=random")


def test_a_chain_over_the_top_segments_reads_only_the_parts_retrieval_ranks_best():
    model = MockModel(replies={"worker": lambda call: f'Answer: fawn\nEvidence: "Paragraph {call.segment}"',
                               "manager": "fawn"})
    text = book()
    result = Reader(text, model=model, window=1024, strategy="chain:notes=map,segment=120,top=3").ask(QUESTION)
    workers = model.calls_by("worker")
    assert len(workers) == 3 and result.segments > 3
    read = [c.segment for c in workers]
    assert read == sorted(read)  # document order
    assert any("boat number 17 fawn" in user(c) for c in workers)  # the part that holds the answer
    assert all(c.prompt_tokens <= 120 + 200 for c in workers)  # short parts: segment=120 plus the prompt
    assert len(model.calls_by("manager")) == 1
    assert result.strategy == "chain:notes=map,segment=120,top=3"
    every = MockModel(replies={"worker": "Answer: fawn", "manager": "fawn"})
    Reader(text, model=every, window=1024, strategy="chain:notes=map,segment=120").ask(QUESTION)
    assert len(every.calls_by("worker")) == result.segments


def test_rag_cannot_summarize():
    model = MockModel()
    with pytest.raises(StrategyError, match="cannot summarize"):
        Reader(book(), model=model, window=1024, strategy="rag").summarize()
    assert model.call_count == 0


def test_truncate_keeps_the_head_and_the_tail_and_says_what_it_left_out():
    text = book()
    model = MockModel(replies={"reader": "no idea"})
    result = Reader(text, model=model, window=1024, strategy="truncate").ask(QUESTION)
    [call] = model.calls
    prompt = user(call)
    assert text[:200] in prompt and text[-200:] in prompt
    assert "Paragraph 20." not in prompt  # the middle is gone
    assert "tokens of the document left out" in prompt
    (head, tail) = result.citations
    assert head.start == 0 and not text[tail.end :].strip() and head.end < tail.start
    assert call.prompt_tokens + call.max_new_tokens <= 1024


def test_full_reads_everything_in_one_call_or_refuses_before_any_call():
    text = book(10)
    model = MockModel(context_window=100_000, replies={"reader": "fawn"})
    result = Reader(text, model=model, window=1024, strategy="full").ask(QUESTION)
    [call] = model.calls
    assert text in user(call) and result.window == 100_000
    assert result.citations[0].start == 0 and result.citations[0].end == len(text)

    small = MockModel(context_window=2000)
    with pytest.raises(DocumentTooLong, match="over the model's context of 2,000"):
        Reader(book(), model=small, window=1024, strategy="full").ask(QUESTION)
    assert small.call_count == 0


# -- auto ----------------------------------------------------------------------------------------------------------
def test_auto_stops_at_retrieval_when_it_answers():
    model = MockModel(replies={"reader": "fawn"})
    result = Reader(book(), model=model, window=1024, strategy="auto").ask(QUESTION)
    assert [c.agent for c in model.calls] == ["reader"]
    assert "does not contain the answer, say that it does not" in user(model.calls[0])
    assert result.text == "fawn" and result.extras["route"] == "rag" and result.strategy == "auto"


def test_auto_budget_limits_its_retrieval_step_and_keeps_its_own_checkpoint():
    saver = InMemorySaver()
    wide = MockModel(replies={"reader": "fawn"})
    Reader(book(), model=wide, window=2048, strategy="auto", checkpointer=saver).ask(QUESTION)
    narrow = MockModel(replies={"reader": "fawn"})
    result = Reader(book(), model=narrow, window=2048, strategy="auto:budget=700", checkpointer=saver).ask(QUESTION)
    [call] = narrow.calls  # a budget of its own: not the wide run's finished answer
    assert call.prompt_tokens < wide.calls[0].prompt_tokens and user(call).count("[excerpt ") >= 1
    assert result.strategy == "auto:budget=700" and result.extras["route"] == "rag"


def test_auto_reads_the_whole_document_when_retrieval_cannot_answer():
    from longread.workflows.auto import AutoStrategy

    grounded = 'Answer: fawn\nEvidence: "painted boat number 17 fawn at dawn"'
    model = MockModel(replies={"reader": "The text does not contain the answer.", "worker": grounded,
                               "manager": "fawn"})
    result = Reader(book(), model=model, window=1024, strategy="auto").ask(QUESTION)
    n = result.segments
    assert [c.agent for c in model.calls] == ["reader"] + ["worker"] * n + ["manager"]
    assert [c.agent for c in result.calls] == ["reader"] + ["worker"] * n + ["manager"]
    assert result.text == "fawn" and result.extras["route"] == AutoStrategy().fallback
    assert "could not answer" in result.extras["route_reason"]
    assert sum(not c.passed_on for c in result.calls if c.agent == "worker") == 1  # one part holds the evidence


def test_auto_reads_the_document_when_retrievals_answer_states_a_number_its_excerpts_do_not_hold():
    grounded = 'Answer: fawn\nEvidence: "painted boat number 17 fawn at dawn"'
    invented = MockModel(replies={"reader": "Boat 17 was painted 9,431 times.", "worker": grounded,
                                  "manager": "fawn"})
    result = Reader(book(), model=invented, window=1024, strategy="auto").ask(QUESTION)
    assert [c.agent for c in invented.calls][:2] == ["reader", "worker"] and result.text == "fawn"
    assert "states 9431, which its excerpts do not hold" in result.extras["route_reason"]
    # a number the excerpts (or the question) hold is retrieval's answer
    held = MockModel(replies={"reader": "Boat 17 was painted fawn, as paragraph 17 says."})
    result = Reader(book(), model=held, window=1024, strategy="auto").ask(QUESTION)
    assert [c.agent for c in held.calls] == ["reader"] and result.extras["route"] == "rag"


def test_auto_summarizes_with_its_fallback():
    # every part shows the tide: each worker's claim passes its check, so the manager writes the summary
    claim = 'Claim: The harbour master watched the tide.\nQuote: "watched the tide come in over the sand"'
    model = MockModel(replies={"worker": claim})
    result = Reader(book(12), model=model, window=1024, strategy="auto").summarize()
    assert "reader" not in [c.agent for c in model.calls] and model.calls[-1].agent == "manager"
    assert result.extras["route"] == "chain"


# -- every strategy ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_every_strategy_reports_events_streams_and_keeps_its_result(name):
    model = MockModel(completion_tokens=12, context_window=100_000)
    events, pieces = [], []
    reader = Reader(book(), model=model, window=1024, strategy=name, checkpointer=InMemorySaver())
    result = reader.ask(QUESTION, on_event=events.append, on_text=pieces.append)
    started = [(e.agent, e.segment, e.path) for e in events if e.kind == "call_started"]
    finished = [(e.agent, e.segment, e.path) for e in events if e.kind == "call_finished"]
    assert sorted(started, key=str) == sorted(finished, key=str)
    assert sorted(finished, key=str) == sorted([(c.agent, c.segment, c.path) for c in result.calls], key=str)
    assert len(model.calls) == len(result.calls)
    assert "".join(pieces) == result.text  # the final answer was streamed
    assert result.strategy.split(":")[0] == name and result.to_dict()["strategy"] == result.strategy
    again = reader.ask(QUESTION)
    assert len(model.calls) == len(result.calls) and again.text == result.text
    reader.forget(QUESTION)
    reader.ask(QUESTION)
    assert len(model.calls) == 2 * len(result.calls)


@pytest.mark.parametrize("name", ALL)
def test_every_strategy_has_an_async_twin_with_the_same_calls(name):
    a, b = MockModel(completion_tokens=9, context_window=100_000), MockModel(completion_tokens=9, context_window=100_000)
    sync = Reader(book(20), model=a, window=1024, strategy=name).ask(QUESTION)
    result = asyncio.run(Reader(book(20), model=b, window=1024, strategy=name).aask(QUESTION))
    key = lambda c: (c.agent, c.path if c.path is not None else -1, c.segment if c.segment is not None else -1)
    assert sorted(([m["content"] for m in c.messages] for c in a.calls), key=str) == \
        sorted(([m["content"] for m in c.messages] for c in b.calls), key=str)
    assert sorted(map(key, a.calls)) == sorted(map(key, b.calls))
    assert result.text == sync.text


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(st.lists(words, min_size=1, max_size=60).map(" ".join), min_size=1, max_size=30).map("\n\n".join),
    question=st.lists(words, min_size=1, max_size=20).map(" ".join),
    window=st.integers(min_value=300, max_value=3000),
    completion=st.integers(min_value=1, max_value=400),
    name=st.sampled_from(ALL),
    summary=st.booleans(),
)
def test_every_call_of_every_strategy_fits_its_window(body, question, window, completion, name, summary):
    if not body.strip() or not question.strip():
        return
    model = MockModel(completion_tokens=completion, context_window=6000)
    reader = Reader(Document.from_text(body), model=model, window=window, strategy=name)
    try:
        result = reader.summarize() if summary else reader.ask(question)
    except (WindowTooSmall, DocumentTooLong, StrategyError):
        assert model.call_count == 0
        return
    limit = result.window
    for call in model.calls:
        assert call.prompt_tokens + call.max_new_tokens <= limit
        assert call.prompt_tokens == model.count_prompt_tokens(call.messages)
    assert limit == (6000 if name == "full" else window)


# -- the registry --------------------------------------------------------------------------------------------------
def test_the_registry_parses_specs_and_refuses_unknown_names():
    assert set(ALL) <= set(available_strategies())
    assert get_strategy("multipath:5").paths == 5
    assert get_strategy("multipath:paths=4,lookback=true") == MultipathStrategy(paths=4, lookback=True)
    assert get_strategy("lookback") == ChainStrategy(lookback=True)
    from longread.workflows.auto import AutoStrategy

    assert get_strategy(None) == AutoStrategy()
    with pytest.raises(StrategyError, match="unknown strategy 'nope'.*chain"):
        get_strategy("nope")
    with pytest.raises(StrategyError, match="multipath:paths=two"):
        get_strategy("multipath:paths=two,colour=red")


def test_a_registered_strategy_is_used_by_reader():
    from longread.workflows.truncate import TruncateStrategy

    class HeadOnly(TruncateStrategy):
        name = "head-only-test"

    register_strategy("head-only-test", HeadOnly, "test strategy")
    model = MockModel(replies={"reader": "ok"})
    result = Reader(book(), model=model, window=1024, strategy="head-only-test").ask(QUESTION)
    assert result.strategy == "head-only-test" and result.text == "ok"
    assert available_strategies()["head-only-test"] == "test strategy"


# -- evidence notes --------------------------------------------------------------------------------------------------
def test_evidence_notes_keep_grounded_replies_as_items_and_drop_invented_ones():
    from longread.agents.notes import evidence_items, grounded

    probe = Reader(book(), strategy="chain:notes=rewrite", model=MockModel(), window=1024)
    segments = probe.segments(probe.budget("query", QUESTION).segment_tokens)
    [part] = [s.index for s in segments if "Paragraph 17." in s.text]
    assert grounded('Answer: fawn\nEvidence: "painted boat number 17 fawn at dawn"', segments[part].text, QUESTION)
    assert not grounded("Answer: boat 17 was painted mauve by the mayor.", segments[part].text, QUESTION)

    def worker(call):
        if call.segment == part:
            return 'Answer: fawn\nEvidence: "The harbour master painted boat number 17 fawn at dawn."'
        return "Answer: boat 17 was painted mauve by the mayor."  # not in the part it read: dropped

    model = MockModel(replies={"worker": worker, "manager": "fawn"})
    result = Reader(book(), model=model, window=1024, strategy="chain:notes=evidence").ask(QUESTION)
    workers = [c for c in result.calls if c.agent == "worker"]
    assert [c.passed_on for c in workers] == [c.segment != part for c in workers]
    assert evidence_items(result.notes) == [(part + 1, f"(part {part + 1}) Answer: fawn Evidence: \"The harbour "
                                             "master painted boat number 17 fawn at dawn.\"")]
    assert {c.segment for c in result.citations} == {part}
    # The worker prompt asks for an answer and its evidence, and offers no escape marker.
    assert "Evidence:" in user(model.calls_by("worker")[0]) and NOTHING_RELEVANT not in user(model.calls_by("worker")[0])


def test_evidence_notes_stay_within_their_cap_dropping_the_least_relevant_item():
    from longread.agents import CommunicationUnit
    from longread.agents.notes import add_evidence, evidence_items

    notes = CommunicationUnit()
    fits = lambda text: len(text.split()) <= 12
    rank = lambda items: [1.0 if "crimson" in t else 0.0 for t in items]
    for i, reply in enumerate(["boat one was crimson", "boat two was grey", "boat three was grey"]):
        notes = add_evidence(notes, i, reply, fits, rank)
    parts = [p for p, _ in evidence_items(notes.text)]
    assert 1 in parts and len(parts) == 2 and fits(notes.text)  # the relevant item survived; order is kept
    assert parts == sorted(parts) and notes.evidence == tuple(p - 1 for p in parts)


def test_map_notes_never_show_a_worker_the_earlier_notes():
    model = MockModel(replies={"worker": lambda call: f'Answer: boat\nEvidence: "Paragraph {call.segment}"',
                               "manager": "done"})
    result = Reader(book(), model=model, window=1024, strategy="chain:notes=map").ask(QUESTION)
    for call in model.calls_by("worker"):
        assert "Notes on the earlier parts" not in user(call) and "Answer: boat" not in user(call)
    assert result.strategy == "chain:notes=map"


@pytest.mark.parametrize("name", [*ALL, "chain:notes=map", "lookback:guided=true,notes=evidence"])
def test_a_dry_run_counts_every_call_a_real_run_could_make(name):
    from longread.backends.estimate import EstimateModel

    counter = MockModel(context_window=100_000)
    estimate = EstimateModel(counter)
    bound = Reader(book(), model=estimate, window=1024, strategy=name).ask(QUESTION)
    grounded = 'Answer: amber\nEvidence: "The harbour master painted boat number 3 amber"'
    for replies in ({}, {"reader": "The text does not contain the answer.", "worker": NOTHING_RELEVANT},
                    {"reader": "The text does not contain the answer.", "worker": grounded}):
        real = MockModel(context_window=100_000, replies=replies)
        result = Reader(book(), model=real, window=1024, strategy=name).ask(QUESTION)
        assert len(bound.calls) >= len(result.calls)
        assert bound.usage.completion_tokens >= result.usage.completion_tokens
    assert all(c.completion_tokens == c.max_new_tokens for c in bound.calls)


def test_unsupported_numbers_are_those_neither_the_source_nor_the_question_holds():
    from longread.agents.notes import unsupported_numbers

    source = "The schooner carried 7,465 barrels in 1851. Her captain was 42."
    assert unsupported_numbers("17465", source) == ["17465"]
    assert unsupported_numbers("She carried 7465 barrels.", source) == []  # 7,465 and 7465 are one number
    assert unsupported_numbers("In 1851, at 42.", source) == []
    assert unsupported_numbers("Boat 17, in 1852 and 3.5 hours", source, "What of boat 17?") == ["1852", "3.5"]
    assert unsupported_numbers("No figure here.", source) == []


def test_auto_keeps_the_retrieval_answer_it_paid_for_when_the_chain_cannot_fit_the_window():
    model = MockModel(replies={"reader": "The text does not contain the answer."}, context_window=6000)
    reader = Reader(Document.from_text("Ada kept the light at Gull Point."), model=model, window=300, strategy="auto")
    result = reader.ask("Where did Ada keep the light?")
    assert model.call_count == 1 and result.text == "The text does not contain the answer."
    assert result.extras["route"] == "rag" and "does not fit the window" in result.extras["route_reason"]
    with pytest.raises(WindowTooSmall):  # the chain itself says why it cannot read here
        Reader(Document.from_text("Ada kept the light."), model=model, window=300, strategy="chain").ask(
            "Where did Ada keep the light?")
