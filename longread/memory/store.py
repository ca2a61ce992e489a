"""The memory stream: everything the agents and the user wrote, in one SQLite file; its items, written and read.

Self-Controlled Memory (Wang et al., "Enhancing Large Language Model with Self-Controlled Memory Framework",
arXiv:2304.13343): the stream keeps every item of a session as *archived memory*; the latest item is *flash
memory*. Each item has its text, an optional summary (written once by the controller's summary gate), its token
count, the source spans it came from, creation and last-access times, and its embedding with the embedder's name
and dims.

Concurrency: WAL journal, a busy timeout, and every write is one short `BEGIN IMMEDIATE` transaction, so two
processes writing to one file wait for each other instead of failing or losing rows. Embeddings are computed
before the transaction starts, so a slow embedder never holds the write lock.

The file has three parts, one module each: this one owns the file (opening, schema, transactions) and the items
(MemoryItem: writing, reading, forgetting); vectors.py keeps each session's embeddings as an in-memory matrix for
retrieval, current with other processes' commits, and the record of which embedder made them; keywords.py keeps
the FTS5 index and the per-session word counts that BM25 reads. MemoryStream is the one door to all three: the
others take its connection and run under its lock. Open one MemoryStream per process (a SQLite connection must not
cross a fork).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from ..errors import DamagedDataWarning, LongreadError
from ..results import Span  # one type with results.Citation; `from longread.memory.store import Span` still works
from ..tokenizers import Tokenizer, tiktoken_tokenizer
from . import keywords
from .embedders import Embedder, MiniLMEmbedder, words
from .vectors import (SessionVectors, Signature, VectorIndex, latest_item_signature, set_signature, signature_of,
                      stored_signature)

SCHEMA_VERSION = 1
Kind = Literal["note", "question", "answer", "turn", "summary"]
KINDS: tuple[str, ...] = ("note", "question", "answer", "turn", "summary")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    summary TEXT,
    tokens INTEGER NOT NULL,
    words INTEGER NOT NULL,
    spans TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    accessed REAL NOT NULL,
    embedding BLOB NOT NULL,
    embedder TEXT NOT NULL,
    dims INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_session ON items (session, id);
""" + keywords.KEYWORD_SCHEMA

_ITEM_COLUMNS = "id, session, kind, text, summary, tokens, spans, created, accessed, embedder, dims"


class MemoryStoreError(LongreadError):
    """A memory file cannot be used. The message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class EmbedderMismatch(MemoryStoreError):
    """The stream's vectors were made by another embedder (name or dims); mixing them would rank garbage."""

    def __init__(self, path: str | Path, stored: Signature, given: Signature):
        self.stored = stored
        self.given = given
        super().__init__(
            path,
            f"memory was embedded with {stored[0]} ({stored[1]} dims) but the embedder given is {given[0]} "
            f"({given[1]} dims); use the same embedder, or open with reembed=True to re-embed every item",
        )


@dataclass(frozen=True)
class MemoryItem:
    id: int
    session: str
    kind: str
    text: str
    summary: str | None
    tokens: int
    spans: tuple[Span, ...]
    created: float
    accessed: float
    embedder: str
    dims: int

    @property
    def brief(self) -> str:
        """The summary where one was written, else the text."""
        return self.summary if self.summary is not None else self.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "session": self.session, "kind": self.kind, "text": self.text, "summary": self.summary,
            "tokens": self.tokens, "spans": [s.to_dict() for s in self.spans], "created": self.created,
            "accessed": self.accessed, "embedder": self.embedder, "dims": self.dims,
        }


def _item(row: Sequence[Any]) -> MemoryItem:
    id_, session, kind, text, summary, tokens, spans, created, accessed, embedder, dims = row
    return MemoryItem(
        id_, session, kind, text, summary, tokens, tuple(Span.of(s) for s in json.loads(spans)),
        created, accessed, embedder, dims,
    )


class MemoryStream:
    """Archived memory (every item of a session) and flash memory (its latest item) in one SQLite file.

        stream = MemoryStream("book.memory.sqlite", embedder=MiniLMEmbedder())
        stream.add("moby", "note", "Ahab wants the white whale.", spans=[{"segment": 3, "start": 0, "end": 900}])
        stream.flash("moby").text

    `tokenizer` counts each item's tokens (pass the model's, so budgets match its window); tiktoken by default.
    A file written with another embedder raises EmbedderMismatch, unless `reembed=True`: then every item is
    re-embedded with this one, in one transaction, so no reader ever sees the two kinds of vectors mixed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        embedder: Embedder | None = None,
        tokenizer: Tokenizer | None = None,
        reembed: bool = False,
        timeout: float = 30.0,
    ):
        self.path = Path(path)
        self.embedder: Embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.tokenizer: Tokenizer = tokenizer if tokenizer is not None else tiktoken_tokenizer()
        self._signature = (self.embedder.name, int(self.embedder.dims))
        self._lock = threading.RLock()
        self._said: set[Any] = set()  # damaged items already warned about
        if self.path.is_dir():
            raise MemoryStoreError(self.path, "is a folder, not a memory file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise MemoryStoreError(self.path, f"cannot open ({exc})") from exc
        try:
            self._open(timeout, reembed)
        except BaseException:
            self._db.close()
            raise

    def _open(self, timeout: float, reembed: bool) -> None:
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise MemoryStoreError(self.path, f"cannot use write-ahead logging (journal mode stays {mode})")
            # NORMAL in WAL mode loses nothing when the process dies, only the last commits on power loss.
            self._db.execute("PRAGMA synchronous = NORMAL")
            stored = self._open_schema()
        except sqlite3.DatabaseError as exc:
            raise MemoryStoreError(self.path, f"not a usable memory file ({exc})") from exc
        self._vectors = VectorIndex(self._db, self._signature[1], self._left_out)  # once the schema is there
        if stored != self._signature:
            if not reembed:
                raise EmbedderMismatch(self.path, stored, self._signature)
            self.reembed()

    # -- transactions ---------------------------------------------------------------------------------

    def _write(self) -> "_Transaction":
        return _Transaction(self._db)

    def _open_schema(self) -> Signature:
        with self._lock, self._write():
            for statement in _split_sql(_SCHEMA):  # not executescript: it would commit outside our transaction
                self._db.execute(statement)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            version = int(meta.get("schema_version", SCHEMA_VERSION))
            if version > SCHEMA_VERSION:
                raise MemoryStoreError(
                    self.path, f"written by a newer longread (memory schema {version}, this one reads {SCHEMA_VERSION})"
                )
            if "schema_version" not in meta:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            if "embedder" not in meta:
                set_signature(self._db, self._signature)
                return self._signature
            try:
                return signature_of(meta["embedder"])
            except (ValueError, TypeError, KeyError) as exc:
                return self._rebuild_signature(exc)

    def _rebuild_signature(self, exc: Exception) -> Signature:
        """The embedder record, rebuilt from the items' own columns (or this stream's, for a file without items)
        when it cannot be read; said with a DamagedDataWarning. Inside the caller's write transaction."""
        signature = latest_item_signature(self._db) or self._signature
        set_signature(self._db, signature)
        warnings.warn(f"{self.path}: its record of the embedder was damaged ({type(exc).__name__}); rebuilt from "
                      f"its items ({signature[0]}, {signature[1]} dims)", DamagedDataWarning, stacklevel=4)
        return signature

    def _check_signature(self) -> None:
        try:
            stored = stored_signature(self._db)
        except (ValueError, TypeError, KeyError) as exc:  # damaged by another process since we opened it
            raise MemoryStoreError(self.path, f"its record of the embedder cannot be read ({exc}); reopen it "
                                              "to rebuild the record") from exc
        if stored != self._signature:  # another process re-embedded the file with another embedder
            raise EmbedderMismatch(self.path, stored, self._signature)

    # -- writing --------------------------------------------------------------------------------------

    def add(
        self,
        session: str,
        kind: Kind,
        text: str,
        *,
        spans: Iterable[Any] = (),
        tokens: int | None = None,
        summary: str | None = None,
    ) -> MemoryItem:
        """Append one item to the session; it becomes the session's flash memory."""
        return self.add_many(session, kind, [text], spans=[spans], tokens=[tokens], summaries=[summary])[0]

    def add_many(
        self,
        session: str,
        kind: Kind,
        texts: Sequence[str],
        *,
        spans: Sequence[Iterable[Any]] | None = None,
        tokens: Sequence[int | None] | None = None,
        summaries: Sequence[str | None] | None = None,
    ) -> list[MemoryItem]:
        """Append several items of one kind in one transaction (embedded in one batch): the fast way to archive."""
        if not isinstance(session, str) or not session:
            raise ValueError("session must be a non-empty string")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        texts = list(texts)
        n = len(texts)
        for name, values in (("spans", spans), ("tokens", tokens), ("summaries", summaries)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} texts")
        if n == 0:
            return []
        span_lists = [tuple(Span.of(s) for s in (spans[i] if spans is not None else ())) for i in range(n)]
        counts = self._token_counts(texts, tokens)
        item_words = [words(t) for t in texts]
        vectors = self.embedder.embed_documents(texts)  # before the transaction: a slow model holds no lock
        if vectors.shape != (n, self._signature[1]):
            expected = (n, self._signature[1])
            raise ValueError(f"{self.embedder!r} returned vectors of shape {vectors.shape}, expected {expected}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        name, dims = self._signature
        with self._lock:
            with self._write():
                self._check_signature()
                ids = []
                for i in range(n):
                    cursor = self._db.execute(
                        "INSERT INTO items (session, kind, text, summary, tokens, words, spans, created, accessed,"
                        " embedding, embedder, dims) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            session, kind, texts[i], summaries[i] if summaries is not None else None, counts[i],
                            len(item_words[i]), json.dumps([s.to_dict() for s in span_lists[i]]), now, now,
                            vectors[i].tobytes(), name, dims,
                        ),
                    )
                    ids.append(int(cursor.lastrowid))
                keywords.count_words(self._db, session, item_words)
            self._vectors.appended(session, np.array(ids, dtype=np.int64), vectors,
                                   np.array([len(w) for w in item_words]))
        return [
            MemoryItem(
                ids[i], session, kind, texts[i], summaries[i] if summaries is not None else None, counts[i],
                span_lists[i], now, now, name, dims,
            )
            for i in range(n)
        ]

    def _token_counts(self, texts: list[str], given: Sequence[int | None] | None) -> list[int]:
        missing = [i for i in range(len(texts)) if given is None or given[i] is None]
        counts = [0 if given is None or given[i] is None else int(given[i]) for i in range(len(texts))]
        batch = getattr(self.tokenizer, "encode_batch", None)  # tiktoken encodes a batch in parallel
        if batch is not None and len(missing) > 1:
            for i, ids in zip(missing, batch([texts[i] for i in missing])):
                counts[i] = len(ids)
        else:
            for i in missing:
                counts[i] = self.tokenizer.count(texts[i])
        return counts

    def touch(self, ids: Iterable[int]) -> None:
        """Set the last-access time of these items to now (the controller calls it for what it activates)."""
        ids = [int(i) for i in ids]
        if not ids:
            return
        with self._lock, self._write():
            self._db.execute(
                f"UPDATE items SET accessed = ? WHERE id IN ({','.join('?' * len(ids))})", (time.time(), *ids)
            )

    def set_summary(self, id: int, text: str) -> None:
        """Store the summary of an item, so that it is computed once."""
        with self._lock, self._write():
            cursor = self._db.execute("UPDATE items SET summary = ? WHERE id = ?", (text, int(id)))
            if cursor.rowcount == 0:
                raise KeyError(f"no memory item {id} in {self.path}")

    def clear(self, session: str) -> int:
        """Forget every item of the session; returns how many were removed."""
        with self._lock:
            with self._write():
                removed = self._db.execute("DELETE FROM items WHERE session = ?", (session,)).rowcount
                keywords.forget_session(self._db, session)
            self._vectors.drop(session)
        return removed

    def forget(self, session: str, kinds: Iterable[str]) -> int:
        """Forget the session's items of these kinds (the chat's /reset forgets questions and answers, not the
        document's notes); returns how many were removed. Word statistics are decremented to match."""
        kinds = list(kinds)
        if not kinds:
            return 0
        with self._lock:
            with self._write():
                rows = self._db.execute(
                    f"SELECT id, text FROM items WHERE session = ? AND kind IN ({','.join('?' * len(kinds))})",
                    (session, *kinds),
                ).fetchall()
                if rows:
                    keywords.uncount_words(self._db, session, [words(text) for _, text in rows])
                    self._db.executemany("DELETE FROM items WHERE id = ?", [(row[0],) for row in rows])
            self._vectors.drop(session)  # rebuilt from the file on the next query
        return len(rows)

    def reembed(self) -> int:
        """Re-embed every item with this stream's embedder and make it the stream's embedder; returns the count.

        Embeddings are computed outside the write lock; items another process added meanwhile are embedded inside
        the final transaction, which switches every vector and the stored embedder name at once.
        """
        with self._lock:
            snapshot = self._db.execute("SELECT id, text FROM items ORDER BY id").fetchall()
        vectors = self.embedder.embed_documents([text for _, text in snapshot]) if snapshot else None
        name, dims = self._signature
        with self._lock:
            with self._write():
                done = {row[0] for row in snapshot}
                late = [r for r in self._db.execute("SELECT id, text FROM items ORDER BY id") if r[0] not in done]
                rows = list(snapshot)
                if late:
                    rows += late
                    extra = self.embedder.embed_documents([text for _, text in late])
                    vectors = extra if vectors is None else np.concatenate([vectors, extra])
                present = {r[0] for r in self._db.execute("SELECT id FROM items")}
                self._db.executemany(
                    "UPDATE items SET embedding = ?, embedder = ?, dims = ? WHERE id = ?",
                    [
                        (np.asarray(vectors[i], dtype=np.float32).tobytes(), name, dims, row[0])
                        for i, row in enumerate(rows)
                        if row[0] in present
                    ],
                )
                set_signature(self._db, self._signature)
            self._vectors.reset()
        return len(rows)

    # -- reading --------------------------------------------------------------------------------------

    def get(self, id: int) -> MemoryItem:
        with self._lock:
            row = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (int(id),)).fetchone()
        readable = self._readable([row] if row is not None else [])
        if not readable:
            raise KeyError(f"no {'readable ' if row is not None else ''}memory item {id} in {self.path}")
        return readable[0]

    def _readable(self, rows: Sequence[Sequence[Any]]) -> list[MemoryItem]:
        """The items of rows that can be read; each that cannot is left out with a DamagedDataWarning."""
        items = []
        for row in rows:
            try:
                items.append(_item(row))
            except (ValueError, TypeError, KeyError) as exc:
                self._left_out(row[0], f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
        return items

    def _left_out(self, id_: Any, why: str) -> None:
        if id_ in self._said:
            return
        self._said.add(id_)
        warnings.warn(f"{self.path}: memory item {id_} cannot be read ({why}); left out", DamagedDataWarning,
                      stacklevel=3)

    def get_many(self, ids: Sequence[int]) -> list[MemoryItem]:
        """Items in the order of ids (ids that no longer exist are left out)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
        by_id = {item.id: item for item in self._readable(rows)}
        return [by_id[i] for i in ids if i in by_id]

    def items(self, session: str, *, kinds: Iterable[str] | None = None, last: int | None = None) -> list[MemoryItem]:
        """Archived memory: the session's items, oldest first (only the `last` N when given)."""
        where, params = "session = ?", [session]
        if kinds is not None:
            kinds = list(kinds)
            where += f" AND kind IN ({','.join('?' * len(kinds))})"
            params += kinds
        query = f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY id DESC"
        if last is not None:
            query += f" LIMIT {int(last)}"
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return self._readable(list(reversed(rows)))

    def flash(self, session: str) -> MemoryItem | None:
        """Flash memory: the session's latest item, or None for an empty session."""
        latest = self.items(session, last=1)
        return latest[0] if latest else None

    def sessions(self) -> list[str]:
        """Sessions that hold items, in the order they were started."""
        with self._lock:
            rows = self._db.execute("SELECT session FROM items GROUP BY session ORDER BY min(id)").fetchall()
        return [row[0] for row in rows]

    def count(self, session: str | None = None) -> int:
        with self._lock:
            if session is None:
                return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])
            return int(self._db.execute("SELECT count(*) FROM items WHERE session = ?", (session,)).fetchone()[0])

    # -- what retrieval reads -------------------------------------------------------------------------

    def vectors(self, session: str) -> SessionVectors:
        """The session's embeddings as an in-memory matrix, current with every commit of every process."""
        with self._lock:
            self._vectors.sync(check=self._check_signature)
            return self._vectors.session(session)

    def term_frequencies(self, session: str, terms: Sequence[str]) -> dict[str, int]:
        """Document frequency in the session of each term (terms that occur nowhere are left out)."""
        with self._lock:
            return keywords.term_frequencies(self._db, session, terms)

    def keyword_matches(self, session: str, terms: Sequence[str], limit: int) -> list[int]:
        """Ids of the session's latest `limit` items containing any of the terms (keywords.keyword_matches)."""
        with self._lock:
            return keywords.keyword_matches(self._db, session, terms, limit)

    def texts(self, ids: Sequence[int]) -> dict[int, str]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        with self._lock:
            rows = self._db.execute(f"SELECT id, text FROM items WHERE id IN ({','.join('?' * len(ids))})", ids)
            return dict(rows.fetchall())

    # -- lifetime -------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "MemoryStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryStream({str(self.path)!r}, embedder={self.embedder!r})"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so busy_timeout applies
    at BEGIN and two writers queue instead of one failing when it upgrades a read transaction."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _split_sql(script: str) -> list[str]:
    """Statements of a script, triggers kept whole (sqlite3.complete_statement knows where each one ends)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not current.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
