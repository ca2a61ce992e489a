"""A small SQLite log of finished runs: one row per document read, for `longread runs` (like `llm logs`).

WORKSPACE/runs.sqlite, beside the checkpoints. A row is written when a document is done or has failed; dry runs
and skipped documents write none. It holds the result (answer or summary, citations, calls), never a credential.
"""

from __future__ import annotations

import json
import sqlite3
import time
import warnings
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ...errors import DamagedDataWarning

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    seconds REAL NOT NULL,
    command TEXT NOT NULL,
    document TEXT NOT NULL,
    question TEXT,
    model TEXT NOT NULL,
    strategy TEXT,
    window INTEGER,
    kv TEXT,
    status TEXT NOT NULL,
    error TEXT,
    segments INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    output TEXT,
    result TEXT,
    cache_hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
"""
# Columns added since the first release, with their definitions: a log written by an older longread gets them.
ADDED_COLUMNS = {"cache_hits": "INTEGER NOT NULL DEFAULT 0"}


@dataclass(frozen=True)
class RunRecord:
    started: float  # Unix time the document's reading began
    seconds: float  # wall time it took
    command: str  # ask | summarize | chat
    document: str
    model: str
    status: str  # done | failed
    question: str | None = None
    strategy: str | None = None
    window: int | None = None
    kv: str | None = None
    error: str | None = None
    segments: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    output: str | None = None  # the summary file, or None when the result went to stdout
    result: dict[str, Any] | None = None
    cache_hits: int = 0  # calls answered from the completion cache (--cache)
    id: int | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def text(self) -> str:
        if not self.result:
            return ""
        return str(self.result.get("answer") or self.result.get("summary") or "")

    def to_dict(self, *, with_result: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started))
        if not with_result:
            data.pop("result")
        return data


_COLUMNS = [f.name for f in fields(RunRecord) if f.name != "id"]
_NUMBERS = {"started": float, "seconds": float, "cost_usd": float, "segments": int, "calls": int,
            "prompt_tokens": int, "completion_tokens": int}
_TEXTS = ("command", "document", "model", "status")


def _record(values: dict[str, Any]) -> RunRecord:
    """A row as a RunRecord; ValueError or TypeError for a row whose values are not what the log writes."""
    for name, kind in _NUMBERS.items():
        if isinstance(values[name], (str, bytes)):
            raise TypeError(f"{name} is text, not a number")
        values[name] = kind(values[name])
    for name in _TEXTS:
        if not isinstance(values[name], str):
            raise TypeError(f"{name} is {type(values[name]).__name__}, not text")
    result = json.loads(values["result"]) if values["result"] else None
    if result is not None and not isinstance(result, dict):
        raise TypeError(f"result is a JSON {type(result).__name__}, not an object")
    values["result"] = result
    return RunRecord(**values)


def runs_path(workspace: Path) -> Path:
    return workspace / "runs.sqlite"


class RunLog:
    """Opens the file for each operation: a log written once per document needs no long-lived connection."""

    def __init__(self, path: Path):
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        conn.executescript(SCHEMA)
        present = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        for column, definition in ADDED_COLUMNS.items():
            if column not in present:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {definition}")
        return conn

    def add(self, record: RunRecord) -> int:
        values = asdict(record)
        values["result"] = json.dumps(record.result, ensure_ascii=False) if record.result is not None else None
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with closing(self._connect()) as conn, conn:
            cursor = conn.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", [values[c] for c in _COLUMNS]
            )
            return int(cursor.lastrowid or 0)

    def _records(self, where: str = "", params: tuple = (), limit: int | None = None) -> list[RunRecord]:
        if not self.path.exists():
            return []
        query = f"SELECT id, {', '.join(_COLUMNS)} FROM runs {where} ORDER BY id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with closing(self._connect()) as conn:
            rows = conn.execute(query, params).fetchall()
        records = []
        for row in rows:
            try:
                records.append(_record(dict(zip(["id", *_COLUMNS], row))))
            except (ValueError, TypeError) as exc:  # a damaged row: the others are still the history
                warnings.warn(f"{self.path}: run {row[0]} cannot be read ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]}); left out", DamagedDataWarning, stacklevel=3)
        return records

    def recent(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        return self._records(limit=limit)

    def get(self, run_id: int) -> RunRecord | None:
        found = self._records("WHERE id = ?", (run_id,))
        return found[0] if found else None
