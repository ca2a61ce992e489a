"""The vector side of a memory file: each session's embeddings as an in-memory matrix, and the file's record of
which embedder made them.

Its own module because it is the store's one piece of in-process state with its own rules: a query reads a
session's embeddings once into a float32 matrix, appended to on every add of this process; `PRAGMA data_version`
tells, at the cost of one pragma, whether another process committed since, and only then are the new rows read.
The store (store.py) owns the file and calls in here with its connection, under its lock; retrieval.py ranks over
the matrices. Nothing here imports the store.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

import numpy as np

Signature = tuple[str, int]  # (embedder name, dims): vectors of two signatures must never be compared


class SessionVectors:
    """One session's ids, embeddings and word counts, in id order, grown in place (capacity doubles)."""

    def __init__(self, dims: int):
        self._ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, dims), dtype=np.float32)
        self._words = np.zeros(0, dtype=np.int32)
        self.n = 0
        self.skipped: set[int] = set()  # ids of rows whose embedding could not be read (left out)
        self._seen = 0  # the last id read, a skipped one included

    def append(self, ids: np.ndarray, matrix: np.ndarray, word_counts: np.ndarray) -> None:
        need = self.n + len(ids)
        if need > len(self._ids):
            capacity = max(need, 2 * len(self._ids), 64)
            self._ids = np.resize(self._ids, capacity)
            self._words = np.resize(self._words, capacity)
            grown = np.zeros((capacity, self._matrix.shape[1]), dtype=np.float32)
            grown[: self.n] = self._matrix[: self.n]
            self._matrix = grown
        # Rows past n are never read, so views handed out earlier stay valid while we write here.
        self._ids[self.n : need] = ids
        self._matrix[self.n : need] = matrix
        self._words[self.n : need] = word_counts
        self.n = need
        if len(ids):
            self._seen = max(self._seen, int(ids[-1]))

    def skip(self, id_: int) -> None:
        self.skipped.add(id_)
        self._seen = max(self._seen, id_)

    @property
    def last_id(self) -> int:
        """The last id read from the file (rows after it are new)."""
        return self._seen

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self.n]

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix[: self.n]

    @property
    def word_counts(self) -> np.ndarray:
        return self._words[: self.n]


class VectorIndex:
    """The SessionVectors of every session queried so far, current with every commit of every process.

    `left_out(id, why)` is told of each row whose embedding cannot be read (it is left out of retrieval, not the
    session). Not locked: the store calls every method under its own lock.
    """

    def __init__(self, db: sqlite3.Connection, dims: int, left_out: Callable[[int, str], None]):
        self._db = db
        self._dims = dims
        self._left_out = left_out
        self._sessions: dict[str, SessionVectors] = {}
        self._data_version = self._pragma_data_version()

    def _pragma_data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def session(self, session: str) -> SessionVectors:
        """The session's matrix, read from the file on first use. Call sync() first to see others' commits."""
        vectors = self._sessions.get(session)
        if vectors is None:
            vectors = SessionVectors(self._dims)
            self._append_rows(session, vectors, after=0)
            self._sessions[session] = vectors
        return vectors

    def appended(self, session: str, ids: np.ndarray, matrix: np.ndarray, word_counts: np.ndarray) -> None:
        """Rows this connection just committed to the session: appended in place when no other process committed
        since the last sync (they are exactly the next rows); otherwise the next sync reads them from the file."""
        vectors = self._sessions.get(session)
        if vectors is not None and self._pragma_data_version() == self._data_version:  # ours never change it
            vectors.append(ids, matrix, word_counts)

    def sync(self, check: Callable[[], None] = lambda: None) -> None:
        """Read the rows other connections added; a session some of whose rows were removed (a clear elsewhere) is
        rebuilt from the file. `check` runs first, only when another connection committed (the store's embedder
        check: it raises when the file was re-embedded with another embedder, and then nothing is read)."""
        version = self._pragma_data_version()
        if version == self._data_version:
            return
        check()
        for session, vectors in list(self._sessions.items()):
            self._append_rows(session, vectors, after=vectors.last_id)
            (count,) = self._db.execute("SELECT count(*) FROM items WHERE session = ?", (session,)).fetchone()
            if count != vectors.n + len(vectors.skipped):
                fresh = SessionVectors(self._dims)
                self._append_rows(session, fresh, after=0)
                self._sessions[session] = fresh
        self._data_version = version

    def drop(self, session: str) -> None:
        """Forget the session's matrix (its rows were removed): rebuilt from the file on the next query."""
        self._sessions.pop(session, None)

    def reset(self) -> None:
        """Forget every matrix (the vectors were rewritten): each is read again on its next query."""
        self._sessions.clear()
        self._data_version = self._pragma_data_version()

    def _append_rows(self, session: str, vectors: SessionVectors, after: int) -> None:
        rows = self._db.execute(
            "SELECT id, embedding, words FROM items WHERE session = ? AND id > ? ORDER BY id", (session, after)
        ).fetchall()
        if not rows:
            return
        dims = self._dims
        good = []
        for row in rows:  # a damaged row is left out of retrieval, not the session
            if isinstance(row[1], bytes) and len(row[1]) == 4 * dims and isinstance(row[2], int):
                good.append(row)
            else:
                vectors.skip(int(row[0]))
                self._left_out(row[0], f"its embedding is not {dims} float32 values")
        rows = good
        if not rows:
            return
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        vectors.append(
            np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
            matrix.reshape(len(rows), dims),
            np.fromiter((row[2] for row in rows), dtype=np.int32, count=len(rows)),
        )


# -- the embedder record (the meta table's 'embedder' row) ----------------------------------------------------------

def signature_of(record: str) -> Signature:
    """The (name, dims) of the record's JSON; a damaged record raises ValueError, TypeError or KeyError."""
    stored = json.loads(record)
    return (str(stored["name"]), int(stored["dims"]))


def stored_signature(db: sqlite3.Connection) -> Signature:
    """The embedder the file's vectors were made with, as recorded now (another process may have re-embedded
    since); a damaged or missing record raises ValueError, TypeError or KeyError."""
    row = db.execute("SELECT value FROM meta WHERE key = 'embedder'").fetchone()
    if row is None:
        raise KeyError("no embedder record")
    return signature_of(row[0])


def set_signature(db: sqlite3.Connection, signature: Signature) -> None:
    value = json.dumps({"name": signature[0], "dims": signature[1]})
    db.execute("INSERT INTO meta VALUES ('embedder', ?) ON CONFLICT(key) DO UPDATE SET value = ?", (value, value))


def latest_item_signature(db: sqlite3.Connection) -> Signature | None:
    """The embedder of the latest item (each item's row names its own), None without items: what rebuilds a
    damaged record."""
    row = db.execute("SELECT embedder, dims FROM items ORDER BY id DESC LIMIT 1").fetchone()
    return (str(row[0]), int(row[1])) if row is not None else None
