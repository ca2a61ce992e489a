"""The SQLite memory stream: items, flash/archived memory, persistence, concurrent writers, embedder checks."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from longread.errors import LongreadError
from longread.memory import EmbedderMismatch, HashingEmbedder, MemoryStoreError, MemoryStream, Span, rank
from longread.tokenizers import tiktoken_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def stream(tmp_path):
    with MemoryStream(tmp_path / "memory.sqlite", embedder=HashingEmbedder(64)) as s:
        yield s


def test_items_keep_every_field_and_flash_is_the_latest(stream):
    note = stream.add("book", "note", "Ahab wants the white whale.", spans=[{"segment": 2, "start": 10, "end": 90}])
    question = stream.add("book", "question", "What does Ahab want?", tokens=7)
    stream.add("other", "turn", "Unrelated session.")

    assert stream.flash("book") == question
    assert [i.id for i in stream.items("book")] == [note.id, question.id]
    assert stream.items("book", last=1) == [question]
    assert stream.items("book", kinds=["note"]) == [note]
    assert stream.sessions() == ["book", "other"]
    assert stream.flash("nobody") is None

    stored = stream.get(note.id)
    assert stored == note
    assert stored.spans == (Span(2, 10, 90),)
    assert stored.tokens == tiktoken_tokenizer().count("Ahab wants the white whale.")
    assert stream.get(question.id).tokens == 7  # a given count is kept as given
    assert (stored.embedder, stored.dims) == ("hashing-v1", 64)


def test_a_memory_span_is_a_citation_and_reads_back_as_one(stream):
    from types import SimpleNamespace

    from longread import Citation

    assert Span is Citation  # one type, two names: an item's spans are citations as they are
    given = [{"segment": 1, "start": 2, "end": 3}, (4, 5, 6), [7, 8, 9], SimpleNamespace(segment=1, start=0, end=2),
             Citation(np.int64(3), np.int64(0), np.int64(4))]
    item = stream.add("s", "answer", "cited", spans=given)
    expected = (Citation(1, 2, 3), Citation(4, 5, 6), Citation(7, 8, 9), Citation(1, 0, 2), Citation(3, 0, 4))
    assert item.spans == expected and stream.get(item.id).spans == expected
    assert all(type(v) is int for span in item.spans for v in (span.segment, span.start, span.end))
    row = stream._db.execute("SELECT spans FROM items WHERE id = ?", (item.id,)).fetchone()[0]
    assert json.loads(row)[0] == {"segment": 1, "start": 2, "end": 3}  # the file's format, unchanged
    assert len({Citation(1, 2, 3), Span.of((1, 2, 3))}) == 1


def test_summary_touch_and_clear(stream):
    a, b = stream.add_many("s", "note", ["first note", "second note"], spans=[[(0, 0, 5)], []])
    assert a.spans == (Span(0, 0, 5),)
    assert [a.tokens, b.tokens] == [tiktoken_tokenizer().count(t) for t in ("first note", "second note")]
    stream.set_summary(a.id, "short")
    assert stream.get(a.id).summary == "short" and stream.get(a.id).brief == "short"
    assert stream.get(b.id).brief == "second note"

    before = stream.get(b.id).accessed
    stream.touch([b.id])
    assert stream.get(b.id).accessed > before
    assert stream.get(a.id).accessed == a.accessed

    assert stream.clear("s") == 2
    assert stream.items("s") == [] and stream.sessions() == []
    with pytest.raises(KeyError):
        stream.get(a.id)
    with pytest.raises(KeyError):
        stream.set_summary(a.id, "gone")
    # Cleared items leave neither the keyword index nor the word statistics behind.
    assert stream.keyword_matches("s", ["note"], 10) == []
    assert stream.term_frequencies("s", ["note"]) == {}


def test_bad_input_is_refused(stream, tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        stream.add("s", "diary", "text")
    with pytest.raises(ValueError, match="session"):
        stream.add("", "note", "text")
    with pytest.raises(ValueError, match="2 entries for 1 texts"):
        stream.add_many("s", "note", ["one"], tokens=[1, 2])
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("just text, not a database\n" * 100)
    with pytest.raises(MemoryStoreError, match="notes.txt") as error:
        MemoryStream(not_sqlite, embedder=HashingEmbedder(8))
    assert isinstance(error.value, LongreadError)
    with pytest.raises(MemoryStoreError, match="is a folder"):
        MemoryStream(tmp_path, embedder=HashingEmbedder(8))


def test_a_file_from_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "m.sqlite"
    MemoryStream(path, embedder=HashingEmbedder(8)).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(MemoryStoreError, match="newer longread"):
        MemoryStream(path, embedder=HashingEmbedder(8))


def test_the_file_uses_wal_and_a_meta_table(stream):
    db = sqlite3.connect(stream.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "1"
    assert json.loads(meta["embedder"]) == {"name": "hashing-v1", "dims": 64}


def test_another_embedder_is_refused_naming_both(tmp_path):
    path = tmp_path / "m.sqlite"
    with MemoryStream(path, embedder=HashingEmbedder(64)) as s:
        s.add_many("s", "note", ["the whale", "the kitchen"])
    with pytest.raises(EmbedderMismatch) as error:
        MemoryStream(path, embedder=HashingEmbedder(32))
    message = str(error.value)
    assert "64 dims" in message and "32 dims" in message and str(path) in message and "reembed=True" in message

    class Renamed(HashingEmbedder):
        name = "other-model"

        def __init__(self) -> None:
            super().__init__(64)
            self.name = "other-model"

    with pytest.raises(EmbedderMismatch, match="other-model"):  # same dims, another vector space
        MemoryStream(path, embedder=Renamed())


def test_reembed_switches_every_vector_and_the_stored_embedder(tmp_path):
    path = tmp_path / "m.sqlite"
    with MemoryStream(path, embedder=HashingEmbedder(64)) as s:
        s.add_many("s", "note", ["the whale swims", "bread in the oven", "a sharp harpoon"])
    with MemoryStream(path, embedder=HashingEmbedder(32), reembed=True) as s:
        index = s.vectors("s")
        assert index.matrix.shape == (3, 32)
        np.testing.assert_allclose(index.matrix, HashingEmbedder(32).embed_documents([i.text for i in s.items("s")]))
        assert {(i.embedder, i.dims) for i in s.items("s")} == {("hashing-v1", 32)}
        assert rank(s, "s", "whale", k=1)[0].item.text == "the whale swims"
    with pytest.raises(EmbedderMismatch):  # the old embedder is now the foreign one
        MemoryStream(path, embedder=HashingEmbedder(64))


def test_a_reembed_by_another_connection_stops_the_old_one(tmp_path):
    path = tmp_path / "m.sqlite"
    old = MemoryStream(path, embedder=HashingEmbedder(64))
    old.add("s", "note", "the whale")
    old.vectors("s")
    MemoryStream(path, embedder=HashingEmbedder(16), reembed=True).close()
    with pytest.raises(EmbedderMismatch):
        old.vectors("s")
    with pytest.raises(EmbedderMismatch):
        old.add("s", "note", "would mix 64-dim vectors into a 16-dim stream")
    old.close()


def test_the_in_memory_index_follows_other_connections(tmp_path):
    path = tmp_path / "m.sqlite"
    mine = MemoryStream(path, embedder=HashingEmbedder(16))
    theirs = MemoryStream(path, embedder=HashingEmbedder(16))
    mine.add("s", "note", "one")
    assert mine.vectors("s").n == 1
    theirs.add_many("s", "note", ["two", "three"])
    mine.add("s", "note", "four")
    index = mine.vectors("s")
    assert [mine.get(int(i)).text for i in index.ids] == ["one", "two", "three", "four"]
    np.testing.assert_allclose(index.matrix, HashingEmbedder(16).embed_documents(["one", "two", "three", "four"]))
    theirs.clear("s")
    assert mine.vectors("s").n == 0
    mine.close()
    theirs.close()


_READ_IN_A_FRESH_INTERPRETER = textwrap.dedent(
    """
    import json, sys
    from longread.memory import HashingEmbedder, MemoryStream, rank
    with MemoryStream(sys.argv[1], embedder=HashingEmbedder(64)) as stream:
        top = rank(stream, "book", "white whale", k=1)[0]
        print(json.dumps({"top": top.item.text, "spans": [s.to_dict() for s in top.item.spans],
                          "flash": stream.flash("book").text, "count": stream.count("book"),
                          "vector": HashingEmbedder(64).embed_query("white whale").tolist()}))
    """
)


def _write_book(path: str) -> None:
    with MemoryStream(path, embedder=HashingEmbedder(64)) as stream:
        stream.add_many("book", "note", ["Ahab hunts the white whale.", "Ishmael signs on the Pequod."],
                        spans=[[{"segment": 0, "start": 0, "end": 50}], [{"segment": 1, "start": 50, "end": 99}]])
        stream.add("book", "question", "Who hunts the whale?")


def _processes():
    # fork where there is one: the child starts with longread imported (seconds saved per process); it opens its
    # own connection, so nothing of the parent's SQLite state is shared.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def test_memory_survives_process_restarts(tmp_path):
    path = str(tmp_path / "m.sqlite")
    writer = _processes().Process(target=_write_book, args=(path,))
    writer.start()
    writer.join(timeout=120)
    assert writer.exitcode == 0
    done = subprocess.run(
        [sys.executable, "-c", _READ_IN_A_FRESH_INTERPRETER, path], capture_output=True, text=True, check=True, cwd=REPO
    )
    seen = json.loads(done.stdout)
    assert seen["top"] == "Ahab hunts the white whale."
    assert seen["spans"] == [{"segment": 0, "start": 0, "end": 50}]
    assert seen["flash"] == "Who hunts the whale?"
    assert seen["count"] == 3
    # The hashing embedder gives the same vector in every process (no salted hash()).
    np.testing.assert_array_equal(np.float32(seen["vector"]), HashingEmbedder(64).embed_query("white whale"))


def _write_many(path: str, tag: str, n: int) -> None:
    with MemoryStream(path, embedder=HashingEmbedder(32)) as stream:
        for i in range(n):
            stream.add("shared", "turn", f"{tag} item {i}")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "m.sqlite")
    reader = MemoryStream(path, embedder=HashingEmbedder(32))
    assert reader.vectors("shared").n == 0
    writers = [_processes().Process(target=_write_many, args=(path, tag, 500)) for tag in ("left", "right")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=240)
        assert w.exitcode == 0
    items = reader.items("shared")
    assert len(items) == 1000
    for tag in ("left", "right"):
        mine = [i.text for i in items if i.text.startswith(tag)]
        assert mine == [f"{tag} item {i}" for i in range(500)]  # each writer's items, all there, in its order
    assert reader.vectors("shared").n == 1000  # the reader's index picked up both writers' rows
    assert reader.term_frequencies("shared", ["left", "right", "item"]) == {"left": 500, "right": 500, "item": 1000}
    assert len(reader.keyword_matches("shared", ["right"], 2000)) == 500
    reader.close()
