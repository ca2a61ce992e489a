"""The SCM session graph (workflows/chat.py): its routes, and its history and memory across restarts (a new graph
on the same SQLite files, and a new process)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from longread import Reader
from longread.memory import HashingEmbedder, MemoryStream
from longread.workflows.chat import build_chat_graph, chat_config, history

from .test_reader_memory import is_memory_call, scripted, story

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def session(folder: Path, replies=None, name: str = "book-club", **options):
    """Reader + graph on folder/memory.sqlite and folder/chat.sqlite, closed on exit (as the console does)."""
    from longread.testing import MockModel

    model = MockModel(completion_tokens=24, replies=replies or scripted())
    conn = sqlite3.connect(folder / "chat.sqlite", check_same_thread=False)
    with MemoryStream(folder / "memory.sqlite", embedder=HashingEmbedder(128)) as stream:
        reader = Reader(story(), strategy="chain:notes=rewrite", model=model, window=1024, memory=stream, session=name, **options)
        try:
            yield build_chat_graph(reader, checkpointer=SqliteSaver(conn)), reader, model
        finally:
            conn.close()


def ask(graph, name: str, question: str) -> dict:
    return graph.invoke({"question": question}, chat_config(name))["history"][-1]


def test_routes_no_notes_read_then_memory(tmp_path):
    with session(tmp_path) as (graph, reader, model):
        first = ask(graph, "book-club", "Which birds did the keeper see?")
        n = first["segments"]
        assert first["answered_from"] == "chain" and len(model.calls) == n + 1
        second = ask(graph, "book-club", "Did the keeper see an otter?")
        assert second["answered_from"] == "memory" and len(model.calls) == n + 2
        assert second["used"] and set(second["used"]) <= {a["id"] for a in second["activated"]}
        assert len(second["calls"]) == 1 and second["segments"] == 0


def test_activation_gate_no_skips_retrieval(tmp_path):
    with session(tmp_path, activation="llm") as (graph, reader, model):
        ask(graph, "book-club", "Which birds did the keeper see?")
        model.replies = scripted(gate="no")
        turn = ask(graph, "book-club", "Thanks!")
        assert turn["answered_from"] == "memory" and turn["activated"] == []
        assert "gate" in turn["reason"] and len(turn["calls"]) == 2


def test_history_and_memory_survive_a_new_graph_on_the_same_files(tmp_path):
    with session(tmp_path) as (graph, reader, model):
        ask(graph, "book-club", "Which birds did the keeper see?")
        ask(graph, "book-club", "Did the keeper see an otter?")
        items = [(i.kind, i.text) for i in reader.memory.items("book-club")]
        turns = history(graph, "book-club")

    with session(tmp_path) as (graph, reader, model):  # everything reopened from the files
        restored = history(graph, "book-club")
        assert restored == turns and [t["question"] for t in restored] == [
            "Which birds did the keeper see?", "Did the keeper see an otter?"
        ]
        assert [(i.kind, i.text) for i in reader.memory.items("book-club")] == items
        assert reader.has_notes()
        third = ask(graph, "book-club", "Did the keeper see a heron?")
        assert third["answered_from"] == "memory" and len(model.calls) == 1  # nothing read again
        # The latest item before this turn (the last answer) is the flash memory of the prompt.
        assert "Most recent memory:\nFrom memory: the keeper saw an otter." in model.calls[0].messages[-1]["content"]
        assert len(history(graph, "book-club")) == 3
        assert history(graph, "another-session") == []


def test_history_survives_a_new_process(tmp_path):
    with session(tmp_path) as (graph, reader, model):
        ask(graph, "book-club", "Which birds did the keeper see?")
        ask(graph, "book-club", "Did the keeper see an otter?")

    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from tests.test_chat_workflow import session, ask, history
with session(Path({str(tmp_path)!r})) as (graph, reader, model):
    before = [t["question"] for t in history(graph, "book-club")]
    turn = ask(graph, "book-club", "Did the keeper see a falcon?")
    print(json.dumps({{"before": before, "from": turn["answered_from"], "calls": len(model.calls),
                      "after": len(history(graph, "book-club"))}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"before": ["Which birds did the keeper see?", "Did the keeper see an otter?"],
                    "from": "memory", "calls": 1, "after": 3}


def test_a_cancelled_turn_leaves_nothing_behind(tmp_path):
    replies = scripted()
    answer = replies["manager"]

    def interrupting(call):
        if is_memory_call(call) and "falcon" in call.messages[-1]["content"].split("Question:")[-1]:
            raise KeyboardInterrupt  # Ctrl-C while the model answers
        return answer(call)

    with session(tmp_path, replies={**replies, "manager": interrupting}) as (graph, reader, model):
        ask(graph, "book-club", "Which birds did the keeper see?")
        items = reader.memory.count("book-club")
        with pytest.raises(KeyboardInterrupt):
            ask(graph, "book-club", "Did the keeper see a falcon?")
        assert len(history(graph, "book-club")) == 1 and reader.memory.count("book-club") == items
        turn = ask(graph, "book-club", "Did the keeper see an otter?")  # the session goes on
        assert turn["answered_from"] == "memory"
        assert [t["question"] for t in history(graph, "book-club")] == [
            "Which birds did the keeper see?", "Did the keeper see an otter?"
        ]


def test_a_reader_without_memory_has_no_session_graph():
    from longread.testing import MockModel

    with pytest.raises(ValueError, match="memory"):
        build_chat_graph(Reader(story(3), strategy="chain:notes=rewrite", model=MockModel(), window=1024))


def test_reset_forgets_the_conversation_and_keeps_the_notes(tmp_path):
    from collections import Counter

    from longread.memory import rank, words

    with session(tmp_path) as (graph, reader, model):
        ask(graph, "book-club", "Which birds did the keeper see?")
        ask(graph, "book-club", "Did the keeper see an otter?")
        stream = reader.memory
        notes = [i.id for i in stream.items("book-club", kinds=("note",))]
        assert stream.forget("book-club", kinds=("question", "answer")) == 4
        graph.checkpointer.delete_thread("book-club")  # what /reset does with the history

        assert [i.id for i in stream.items("book-club")] == notes
        assert history(graph, "book-club") == []
        # Word statistics match what is left, so keyword scores do not count forgotten items.
        remaining = Counter(t for i in stream.items("book-club") for t in set(words(i.text)))
        terms = ["otter", "keeper", "birds", "did", "see", "part"]
        assert stream.term_frequencies("book-club", terms) == {t: remaining[t] for t in terms if remaining[t]}
        assert {s.item.id for s in rank(stream, "book-club", "Did the keeper see an otter?", k=10)} <= set(notes)
        turn = ask(graph, "book-club", "Did the keeper see a heron?")
        assert turn["answered_from"] == "memory" and len(history(graph, "book-club")) == 1
