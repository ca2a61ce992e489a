"""The SCM memory controller: activation gate, summary gate with caching, and the window-safe fused prompt."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longread.errors import WindowTooSmall
from longread.memory import HashingEmbedder, MemoryController, MemoryStream, Recalled, RetrievalConfig, parse_yes_no
from longread.testing import MockModel

WORDS = "whale sea ship captain harpoon storm deck sail crew voyage island oil bone night".split()


def long_text(n_words: int, seed: int = 0) -> str:
    return " ".join(WORDS[(seed + i * 5) % len(WORDS)] for i in range(n_words))  # 5 is coprime to 14: all words


@pytest.fixture
def stream(tmp_path):
    with MemoryStream(tmp_path / "m.sqlite", embedder=HashingEmbedder(64)) as s:
        yield s


def answering(reply: str, **options) -> MockModel:
    """The controller's calls routed by their step: `reply` to the activation gate, a fixed summary to a summary
    request."""
    def respond(call):
        return {"gate": reply, "summary": "SUMMARY of a long note"}[call.step]

    return MockModel(replies={"controller": respond}, **options)


@pytest.mark.parametrize("reply, needed", [("yes", True), ("No.", False), ("(A)", True), ("B", False)])
def test_llm_gate_asks_once_and_follows_the_answer(stream, reply, needed):
    stream.add_many("s", "note", ["The whale is white.", "The ship is the Pequod.", "Latest note."])
    model = answering(reply)
    controller = MemoryController(model, stream, activation="llm")
    activation = controller.activate("s", "What colour is the whale?")

    assert len(model.calls) == 1
    asked = model.calls[0]
    assert "What colour is the whale?" in asked.prompt and "yes or no" in asked.prompt
    assert asked.max_new_tokens == controller.gate_tokens
    assert activation.needed is needed
    assert activation.flash.text == "Latest note."  # flash memory comes whatever the gate says
    if needed:
        texts = [m.text for m in activation.memories]
        assert texts[0] == "The whale is white." and "Latest note." not in texts
        assert stream.get(activation.memories[0].item.id).accessed > activation.memories[0].item.created
    else:
        assert activation.memories == ()
    assert [c.agent for c in controller.calls] == ["controller"] and activation.calls == tuple(controller.calls)


def test_always_and_never_gates_make_no_call(stream):
    stream.add_many("s", "note", ["one note", "two notes"])
    model = MockModel()
    assert len(MemoryController(model, stream, activation="always").activate("s", "q").memories) == 1
    assert MemoryController(model, stream, activation="never").activate("s", "q").memories == ()
    assert model.calls == []
    with pytest.raises(ValueError):
        MemoryController(model, stream, activation="sometimes")


def test_an_unclear_gate_reply_falls_back_to_when_unsure(stream):
    stream.add_many("s", "note", ["one note", "two notes"])
    unclear = MockModel(replies={"controller": "Perhaps; it depends."})
    assert MemoryController(unclear, stream).needs_memory("q") is True
    assert MemoryController(unclear, stream, when_unsure=False).needs_memory("q") is False


def test_parse_yes_no():
    assert parse_yes_no(" Yes, it does.") is True
    assert parse_yes_no("no") is False
    assert parse_yes_no("The answer is yes") is True
    assert parse_yes_no("maybe") is None
    assert parse_yes_no("") is None


def test_summary_gate_summarises_only_long_items_only_over_budget_and_only_once(stream):
    long_a = stream.add("s", "note", "Alpha: " + long_text(1200, 1))  # > 800 tokens each
    long_b = stream.add("s", "note", "Beta: " + long_text(1000, 2))
    short = stream.add_many("s", "note", [f"short whale note {i}" for i in range(3)])
    stream.add("s", "turn", "the flash memory")
    assert long_a.tokens > 800 and long_b.tokens > 800 and all(s.tokens < 800 for s in short)

    model = answering("yes")
    roomy = MemoryController(model, stream, activation="always", budget=10_000)
    assert all(not m.summarized for m in roomy.activate("s", "whale sea ship").memories)
    assert model.calls == []  # under budget: nothing is summarised

    controller = MemoryController(model, stream, activation="always", budget=2000)
    first = controller.activate("s", "whale sea ship")
    assert {m.item.id for m in first.memories} == {long_a.id, long_b.id, *(s.id for s in short)}
    summarised = {m.item.id for m in first.memories if m.summarized}
    assert summarised == {long_a.id, long_b.id}
    assert len(model.calls) == 2 and all(c.max_new_tokens == controller.summary_tokens for c in model.calls)
    for item in (long_a, long_b):  # one call per long item, with that item's text
        assert sorted(item.text[:30] in c.prompt for c in model.calls) == [False, True]
    for m in first.memories:
        assert m.text == ("SUMMARY of a long note" if m.summarized else m.item.text)
    assert stream.get(long_a.id).summary == "SUMMARY of a long note"  # cached in the stream

    again = MemoryController(model, stream, activation="always", budget=2000).activate("s", "whale sea ship")
    assert len(model.calls) == 2  # the cached summaries are reused: no new call
    assert {m.item.id for m in again.memories if m.summarized} == {long_a.id, long_b.id}


def test_async_activation_matches_sync(stream):
    stream.add_many("s", "note", ["The whale is white.", "The ship is the Pequod.", "Latest note."])
    sync = MemoryController(answering("yes"), stream).activate("s", "whale?")
    model = answering("yes")
    result = asyncio.run(MemoryController(model, stream).aactivate("s", "whale?"))
    assert [m.item.id for m in result.memories] == [m.item.id for m in sync.memories]
    assert len(model.calls) == 1


def test_fuse_orders_memory_flash_and_question(stream):
    items = stream.add_many("s", "note", ["first memory", "second memory", "flash memory"])
    controller = MemoryController(MockModel(), stream)
    activated = [Recalled(items[1], "second memory", 2), Recalled(items[0], "first memory", 2), items[2]]
    messages = controller.fuse("the question?", items[2], activated, window=4096, max_new_tokens=100,
                               instructions="Be brief.")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    body = messages[1]["content"]
    places = [body.index(part) for part in ("second memory", "first memory", "flash memory", "the question?")]
    assert places == sorted(places)
    assert body.count("flash memory") == 1  # the flash item is not repeated as related memory


class TemplatedModel(MockModel):
    """A backend whose prompt counts more than its tokenizer sees in the text (a chat template that adds a token
    per line, say), so fuse's per-piece estimate falls short and only the model's own count can be trusted."""

    def count_prompt_tokens(self, messages, cache_prefix=None):
        return super().count_prompt_tokens(messages) + sum(m["content"].count("\n") * 3 for m in messages)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    templated=st.booleans(),
    lengths=st.lists(st.integers(1, 400), max_size=7),
    flash_length=st.one_of(st.none(), st.integers(1, 600)),
    question_length=st.integers(1, 40),
    window=st.integers(60, 3000),
    max_new_tokens=st.integers(1, 300),
    instructions=st.one_of(st.none(), st.text(max_size=80)),
)
def test_fused_prompt_never_exceeds_the_window(
    tmp_path_factory, templated, lengths, flash_length, question_length, window, max_new_tokens, instructions
):
    with MemoryStream(tmp_path_factory.mktemp("m") / "m.sqlite", embedder=HashingEmbedder(16)) as stream:
        model = TemplatedModel() if templated else MockModel()
        controller = MemoryController(model, stream)
        texts = [long_text(n, i) for i, n in enumerate(lengths)]
        items = stream.add_many("s", "note", texts) if texts else []
        flash = stream.add("s", "turn", long_text(flash_length, 99)) if flash_length else None
        activated = [Recalled(item, item.text, item.tokens) for item in items]
        question = long_text(question_length, 5) + "?"
        try:
            fused = controller.build_prompt(question, flash, activated, window, max_new_tokens, instructions)
        except WindowTooSmall:
            bare = controller.build_prompt(question, None, [], 10**9, 1, instructions).messages
            assert model.count_prompt_tokens(bare) + max_new_tokens > window  # refused only when nothing fits
            return
        assert model.count_prompt_tokens(fused.messages) + max_new_tokens <= window
        assert fused.prompt_tokens == model.count_prompt_tokens(fused.messages)
        body = fused.messages[-1]["content"]
        assert question in body  # the question is never cut
        assert len(fused.kept) + fused.dropped == len(activated)
        # What is kept is the best-ranked prefix; only the last kept memory may be cut.
        assert [m.item.id for m in fused.kept] == [a.item.id for a in activated[: len(fused.kept)]]
        assert all(m.text == m.item.text for m in fused.kept[:-1])
        for m in fused.kept:
            assert m.text in body
        if fused.dropped == 0 and not fused.truncated:
            assert all(t in body for t in texts)


def test_window_too_small_names_the_numbers(stream):
    controller = MemoryController(MockModel(), stream)
    with pytest.raises(WindowTooSmall, match="over the window of 20"):
        controller.fuse("a question " * 10, None, [], window=20, max_new_tokens=5)


def test_a_summary_call_fits_the_models_window_even_for_a_huge_item(stream):
    huge = stream.add("s", "note", "Omega: " + long_text(3000, 3))
    model = answering("yes", context_window=700)
    controller = MemoryController(model, stream, activation="always", budget=100)
    assert controller.summarize(huge) == "SUMMARY of a long note"
    (call,) = model.calls
    assert call.prompt_tokens + call.max_new_tokens <= 700 and "Omega:" in call.prompt  # cut, from the start
