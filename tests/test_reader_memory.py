"""Reader + memory stream with a recording MockModel: what is archived, what the manager recalls, and the rule
that answers a later question from memory (exact call counts) or by a fresh chain pass."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longread import Reader, WindowTooSmall
from longread.agents import NOTHING_RELEVANT
from longread.memory import DEFAULT_MEMORY_PROMPTS, HashingEmbedder, MemoryStream, rank
from longread.memory.reading import ReadingMemory
from longread.reader import default_session
from longread.testing import MockModel

INSUFFICIENT = DEFAULT_MEMORY_PROMPTS.insufficient
MEMORY_ANSWER_SYSTEM = DEFAULT_MEMORY_PROMPTS.memory_answer_system
RECALLED_NOTE = DEFAULT_MEMORY_PROMPTS.recalled_note

# Each paragraph names its own animal, so a note can be traced to the part it came from.
ANIMALS = "otter heron badger falcon weasel marten plover curlew bittern lapwing".split()


def story(paragraphs: int = 30) -> str:
    return "\n\n".join(
        f"Paragraph {i}. The keeper saw a {ANIMALS[i % len(ANIMALS)]} on the shingle at dawn and wrote it in the log. "
        "The lamp burned all night and the clockwork turned the lens. " * 3
        for i in range(paragraphs)
    )


def is_memory_call(call) -> bool:
    return call.agent == "manager" and call.step == "memory"


def scripted(memory_reply: str = "From memory: the keeper saw an otter.", skip_parts: tuple[int, ...] = (),
             gate: str = "yes") -> dict:
    """Replies routed by role: worker notes name their part; the manager and the memory answer say which they are."""

    def worker(call):
        part = call.segment + 1
        return NOTHING_RELEVANT if part in skip_parts else f"Note on part {part}: the keeper logged birds."

    def manager(call):
        return memory_reply if is_memory_call(call) else "Manager answer."

    def controller(call):
        return gate if call.step == "gate" else None

    return {"worker": worker, "manager": manager, "controller": controller}


@pytest.fixture
def stream(tmp_path):
    with MemoryStream(tmp_path / "memory.sqlite", embedder=HashingEmbedder(128)) as s:
        yield s


def make_reader(stream, replies=None, window=1024, **options):
    model = MockModel(completion_tokens=24, replies=replies or scripted())
    return Reader(story(), strategy="chain:notes=rewrite", model=model, window=window, memory=stream, **options), model


def test_without_memory_nothing_changes():
    model = MockModel(completion_tokens=12)
    result = Reader(story(12), strategy="chain:notes=rewrite", model=model, window=1024).ask("What did the keeper see?")
    assert "answered_from" not in result.extras and "answered_from" not in result.to_dict()
    assert len(model.calls) == result.segments + 1


def test_every_worker_note_not_passed_on_is_archived_with_its_segment_span(stream):
    reader, model = make_reader(stream, scripted(skip_parts=(2, 4)))
    result = reader.ask("Which birds did the keeper see?")

    n = result.segments
    assert n >= 5
    assert len(model.calls) == n + 1  # no notes yet: one chain pass, nothing else
    assert result.extras["answered_from"] == "chain" and "no notes" in result.extras["reason"]
    segments = reader.segments(reader.budget("query", "Which birds did the keeper see?").segment_tokens)
    notes = stream.items(reader.session, kinds=("note",))
    kept = [i for i in range(n) if i + 1 not in (2, 4)]  # parts 2 and 4 found nothing and passed on
    assert [note.text for note in notes] == [f"Note on part {i + 1}: the keeper logged birds." for i in kept]
    for note, i in zip(notes, kept):
        assert [span.to_dict() for span in note.spans] == [
            {"segment": i, "start": segments[i].start, "end": segments[i].end}
        ]
    # The question and the answer follow the notes.
    kinds = [item.kind for item in stream.items(reader.session)]
    assert kinds == ["note"] * len(kept) + ["question", "answer"]
    assert stream.flash(reader.session).text == "Manager answer."


def test_manager_gets_the_last_note_and_recalled_notes_never_over_the_window(stream):
    reader, model = make_reader(stream)
    question = "Which birds did the keeper see?"
    result = reader.ask(question)
    manager = model.calls[-1]
    content = manager.messages[-1]["content"]
    n = result.segments
    last_note = f"Note on part {n}: the keeper logged birds."
    assert content.count(last_note) == 1  # the last CU, not recalled a second time
    recalled = re.findall(r"Earlier notes \(part (\d+)\): (Note on part (\d+)[^\n]*)", content)
    assert recalled, "earlier notes of the pass are recalled for the manager"
    for part, text, named in recalled:
        assert part == named and int(part) < n  # the label is the part the note came from
    assert len(recalled) <= reader.controller.top_k
    assert set(result.extras["recalled"]) <= {item.id for item in stream.items(reader.session, kinds=("note",))}
    assert manager.prompt_tokens + manager.max_new_tokens <= 1024
    # Recalled notes are evidence: their spans are among the citations.
    cited = {c.segment for c in result.citations}
    assert {int(part) - 1 for part, _, _ in recalled} <= cited


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window=st.integers(560, 1100), words=st.integers(1, 90), paragraphs=st.integers(4, 30))
def test_recall_fills_the_room_and_never_exceeds_the_window(tmp_path_factory, window, words, paragraphs):
    """Notes of any length, windows of any size: the manager's prompt + answer cap stays within the window, and
    a ranked note is left out only if it would not fit."""
    folder = tmp_path_factory.mktemp("recall")
    long_note = " ".join(["heron"] * words)

    model = MockModel(completion_tokens=16, replies={"worker": lambda call: f"part {call.segment + 1}: {long_note}"})
    question = "Where was the heron?"
    with MemoryStream(folder / "m.sqlite", embedder=HashingEmbedder(64)) as stream:
        reader = Reader(story(paragraphs), strategy="chain:notes=rewrite", model=model, window=window, memory=stream)
        try:
            result = reader.read(question)
        except WindowTooSmall:  # a window too small for the question is refused before any call
            assert not model.calls
            return
        for call in model.calls:
            assert call.prompt_tokens + call.max_new_tokens <= window
        manager = model.calls[-1]
        flash = stream.flash(reader.session)
        ranked = rank(stream, reader.session, question, k=reader.controller.top_k, config=reader.controller.retrieval,
                      exclude=[flash.id])
        # Left out and not a copy of the last CU (the manager reads that anyway): it must not have fitted.
        left_out = [s.item for s in ranked if s.item.id not in result.extras["recalled"] and s.item.text != flash.text]
        for item in left_out:
            candidate = RECALLED_NOTE.format(part=item.spans[0].segment + 1, text=item.text) + "\n\n"
            content = manager.messages[-1]["content"].replace("Notes on the document:\n",
                                                              "Notes on the document:\n" + candidate, 1)
            grown = [manager.messages[0], {"role": "user", "content": content}]
            assert model.count_prompt_tokens(grown) + manager.max_new_tokens > window


def test_second_question_is_answered_from_memory_in_one_call(stream):
    reader, model = make_reader(stream)
    first = reader.ask("Which birds did the keeper see?")
    before, items_before = len(model.calls), stream.count(reader.session)

    second = reader.ask("Did the keeper see an otter?")
    assert len(model.calls) == before + 1  # activation "always": no gate call, no segment read
    call = model.calls[-1]
    assert is_memory_call(call) and call.messages[0]["content"] == MEMORY_ANSWER_SYSTEM
    assert INSUFFICIENT in call.messages[0]["content"]
    assert "Did the keeper see an otter?" in call.messages[-1]["content"]
    assert call.prompt_tokens + call.max_new_tokens <= 1024
    assert call.max_new_tokens == reader.answer_tokens("Did the keeper see an otter?")
    assert second.answer == "From memory: the keeper saw an otter."
    assert second.extras["answered_from"] == "memory" and "no segment" in second.extras["reason"]
    assert second.segments == 0 and second.usage.calls == 1
    assert [c.agent for c in second.calls] == ["manager"]
    # The notes in the prompt are the citations; the question and answer are archived.
    used = stream.get_many(second.extras["used"])
    assert used and all(item.text in call.messages[-1]["content"] for item in used)
    assert {(c.segment, c.start, c.end) for c in second.citations} == {
        (s.segment, s.start, s.end) for item in used for s in item.spans
    }
    assert stream.count(reader.session) == items_before + 2
    assert [i.kind for i in stream.items(reader.session, last=2)] == ["question", "answer"]
    assert first.extras["answered_from"] == "chain"


def test_llm_gate_adds_exactly_one_call(stream):
    reader, model = make_reader(stream, activation="llm")
    reader.ask("Which birds did the keeper see?")
    before = len(model.calls)
    result = reader.ask("Did the keeper see a heron?")
    assert len(model.calls) == before + 2
    assert model.calls[-2].agent == "controller" and model.calls[-2].step == "gate"
    assert [c.agent for c in result.calls] == ["controller", "manager"]
    assert result.extras["answered_from"] == "memory"


def test_gate_saying_no_answers_from_flash_memory_only(stream):
    reader, model = make_reader(stream, activation="llm")
    reader.ask("Which birds did the keeper see?")
    model.replies = scripted(gate="no")
    before = len(model.calls)
    result = reader.ask("Thank you!")
    assert len(model.calls) == before + 2
    assert result.extras["answered_from"] == "memory" and result.extras["activated"] == []
    assert "Related memory" not in model.calls[-1].messages[-1]["content"]
    assert "Most recent memory" in model.calls[-1].messages[-1]["content"]  # the flash memory is always there


@pytest.mark.parametrize("reply", [INSUFFICIENT, "insufficient.", "", "The notes do not contain the answer."])
def test_insufficient_memory_runs_a_fresh_chain_pass(stream, reply):
    reader, model = make_reader(stream, scripted(memory_reply=reply))
    first = reader.ask("Which birds did the keeper see?")
    n, before = first.segments, len(model.calls)

    result = reader.ask("What colour was the lamp?")
    assert len(model.calls) == before + 1 + n + 1  # the attempt, every worker again, the manager
    assert is_memory_call(model.calls[before])
    assert [c.agent for c in result.calls] == ["manager"] + ["worker"] * n + ["manager"]
    assert result.extras["answered_from"] == "chain" and "insufficient" in result.extras["reason"]
    assert result.answer == "Manager answer." and result.segments == n
    # The workers get the new question.
    assert model.calls[before + 1].agent == "worker"
    assert "What colour was the lamp?" in model.calls[before + 1].messages[-1]["content"]


@pytest.mark.parametrize("reply, insufficient", [
    ("INSUFFICIENT", True), ("  **Insufficient**  ", True), ("", True), ("I don't know.", True),
    ("The memory does not contain any information about that.", True),
    ("The keeper saw an otter at dawn.", False),
    ("The lamp was lit late; the log does not mention the weather that night, but the storm " * 3, False),
])
def test_a_reply_from_memory_is_judged_insufficient(stream, reply, insufficient):
    reader, _ = make_reader(stream)
    memory = ReadingMemory(reader.controller, reader.session)
    assert memory.insufficient(reply) is insufficient


def test_session_comes_from_the_document_and_memory_outlives_the_reader(tmp_path):
    path = tmp_path / "memory.sqlite"
    model = MockModel(completion_tokens=24, replies=scripted())
    with Reader(story(), strategy="chain:notes=rewrite", model=model, window=1024, memory=path, embedder=HashingEmbedder(128)) as reader:
        reader.ask("Which birds did the keeper see?")
        session = reader.session
    assert session == default_session(reader.document)
    other = Reader(story(8), strategy="chain:notes=rewrite", model=model, window=1024, memory=path, embedder=HashingEmbedder(128))
    assert other.session != session and not other.has_notes()
    other.close()

    # A new reader (a new process, as far as the file can tell) answers from the notes the first one left.
    before = len(model.calls)
    with Reader(story(), strategy="chain:notes=rewrite", model=model, window=1024, memory=path, embedder=HashingEmbedder(128)) as again:
        result = again.ask("Did the keeper see an otter?")
    assert result.extras["answered_from"] == "memory" and len(model.calls) == before + 1


def test_summarize_with_memory_archives_notes_and_the_summary(stream):
    reader, model = make_reader(stream)
    result = reader.summarize()
    assert result.extras["answered_from"] == "chain"
    kinds = [item.kind for item in stream.items(reader.session)]
    assert kinds == ["note"] * result.segments + ["summary"]
    assert stream.flash(reader.session).text == result.text.strip()
    assert "Earlier notes (part 1)" in model.calls[-1].messages[-1]["content"]
    # A question after the summary is answered from memory.
    before = len(model.calls)
    assert reader.ask("Did the keeper see a curlew?").extras["answered_from"] == "memory"
    assert len(model.calls) == before + 1


def test_async_ask_with_memory_makes_the_same_calls(tmp_path):
    def run(use_async: bool):
        model = MockModel(completion_tokens=24, replies=scripted())
        with MemoryStream(tmp_path / f"m{use_async}.sqlite", embedder=HashingEmbedder(128)) as stream:
            reader = Reader(story(), strategy="chain:notes=rewrite", model=model, window=1024, memory=stream)
            for question in ("Which birds did the keeper see?", "Did the keeper see an otter?"):
                result = asyncio.run(reader.aask(question)) if use_async else reader.ask(question)
            return [c.messages for c in model.calls], result.extras["answered_from"]

    assert run(True) == run(False)
