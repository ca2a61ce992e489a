"""The keyword side of a memory file: its FTS5 index of item texts and each session's document frequency per word,
which retrieval's BM25 part reads (retrieval.py: exact terms, names and numbers, that embeddings blur).

Its own module because it is a second index with its own tables and its own upkeep: the FTS5 table is kept by
triggers, the word counts by the store's writes, which call `count_words` and `uncount_words` inside their
transaction. Functions of the store's connection, called under the store's lock; nothing here imports the store.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Iterable, Sequence

# Created after the items table (store.py), which the FTS5 table and its triggers read.
KEYWORD_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5 (
    text, content='items', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS items_fts_insert AFTER INSERT ON items BEGIN
    INSERT INTO items_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
-- Document frequency of each word per session, for BM25's IDF. FTS5 can tell it too, but only by scanning the
-- word's whole posting list (milliseconds for a common word at 100k items); this table answers in microseconds.
CREATE TABLE IF NOT EXISTS terms (
    session TEXT NOT NULL, term TEXT NOT NULL, df INTEGER NOT NULL, PRIMARY KEY (session, term)
) WITHOUT ROWID;
"""


def count_words(db: sqlite3.Connection, session: str, item_words: Iterable[Sequence[str]]) -> None:
    """Add new items (each as its words) to the session's document frequencies; inside the caller's transaction."""
    document_frequency = Counter(term for ws in item_words for term in set(ws))
    db.executemany(
        "INSERT INTO terms (session, term, df) VALUES (?, ?, ?)"
        " ON CONFLICT (session, term) DO UPDATE SET df = df + excluded.df",
        [(session, term, df) for term, df in document_frequency.items()],
    )


def uncount_words(db: sqlite3.Connection, session: str, item_words: Iterable[Sequence[str]]) -> None:
    """Take items being removed (each as its words) out of the session's document frequencies; a word left in no
    item is forgotten. Inside the caller's transaction."""
    frequency = Counter(term for ws in item_words for term in set(ws))
    db.executemany(
        "UPDATE terms SET df = df - ? WHERE session = ? AND term = ?",
        [(df, session, term) for term, df in frequency.items()],
    )
    db.execute("DELETE FROM terms WHERE session = ? AND df <= 0", (session,))


def forget_session(db: sqlite3.Connection, session: str) -> None:
    """Drop the session's document frequencies (every item of it is being removed); inside the caller's
    transaction. The FTS5 rows go with the items, through the delete trigger."""
    db.execute("DELETE FROM terms WHERE session = ?", (session,))


def term_frequencies(db: sqlite3.Connection, session: str, terms: Sequence[str]) -> dict[str, int]:
    """Document frequency in the session of each term (terms that occur nowhere are left out)."""
    if not terms:
        return {}
    rows = db.execute(
        f"SELECT term, df FROM terms WHERE session = ? AND term IN ({','.join('?' * len(terms))})",
        (session, *terms),
    ).fetchall()
    return dict(rows)


def keyword_matches(db: sqlite3.Connection, session: str, terms: Sequence[str], limit: int) -> list[int]:
    """Ids of the session's latest `limit` items containing any of the terms, through the FTS5 index.

    No ORDER BY rank: FTS5 walks its posting lists in rowid order and stops at `limit`, so the cost stays small
    however many items match; the caller scores the hits itself (BM25 over its candidate set).
    """
    if not terms or limit <= 0:
        return []
    match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    rows = db.execute(
        "SELECT items.id FROM items_fts JOIN items ON items.id = items_fts.rowid"
        " WHERE items_fts MATCH ? AND items.session = ? ORDER BY items_fts.rowid DESC LIMIT ?",
        (match, session, int(limit)),
    ).fetchall()
    return [row[0] for row in rows]
