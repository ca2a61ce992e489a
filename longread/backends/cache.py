"""The completion cache: a model call already answered with the same model, prompt and sampling settings is
answered again from SQLite, without the model (opt-in: `--cache`, `cache=`).

The key is a SHA-256 over what decides a reply: the model's name, the settings that change its output (the local
engine's KV policy and repetition penalty, the server an API model is reached at), the messages, max_new_tokens,
temperature and the response format. What does not change a reply is left out: the window (checked before the
call), the cache prefix (a KV reuse hint), the role tag. A sampled reply (temperature > 0) is cached too: a re-run
with the same settings gets the same text back, which is what a re-run asks for.

A row holds the key, the model's name and the reply with its token counts; never the messages, a key or a header.
A hit costs nothing (`cost_usd` 0, `cache_hit` True); `longread runs` counts the hits of each run. A cache that
cannot be read or written (damaged, a full disk) is a warning and the call goes to the model: the cache never fails
a run.

Not SQLite-backed litellm caching: it covers API models only, and keys on the request litellm builds (with
credentials in some providers' kwargs); this one covers every backend and keys on longread's own call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from .base import ChatModel, Completion, Message
from .calls import Steps
from .wrapper import ModelWrapper

logger = logging.getLogger(__name__)

CACHE_FILE = "completions.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT NOT NULL,
    cost_usd REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
"""


def model_settings(model: ChatModel) -> dict[str, Any]:
    """The settings of a model, besides the call's own, that change what it answers (public attributes only)."""
    return {"name": model.name, "kv": getattr(model, "kv", None), "api_base": getattr(model, "api_base", None),
            "repetition_penalty": getattr(model, "repetition_penalty", None)}


def cache_key(model: ChatModel, messages: Sequence[Message], max_new_tokens: int, temperature: float,
              response_format: dict[str, Any] | None = None) -> str:
    payload = {
        "model": model_settings(model),
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "max_new_tokens": int(max_new_tokens), "temperature": float(temperature),
        "response_format": response_format,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CompletionCache:
    """The SQLite file. One connection, shared by the threads of a run under a lock; WAL, so runs in other
    processes read and write it at the same time."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._broken = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._broken:  # once per cache: a run of a thousand calls warns once
            logger.warning("the completion cache %s could not be %s (%s); calls go to the model", self.path, what,
                           exc)
        self._broken = True

    def get(self, key: str) -> Completion | None:
        with self._lock:
            if self._broken:
                return None
            try:
                row = self._connection().execute(
                    "SELECT text, prompt_tokens, completion_tokens, cached_prompt_tokens, finish_reason "
                    "FROM completions WHERE key = ?", (key,)).fetchone()
            except (OSError, sqlite3.Error) as exc:
                self._failed("read", exc)
                return None
        if row is None:
            return None
        text, prompt, completion, cached, finish = row
        return Completion(text, int(prompt), int(completion), 0.0, 0.0, finish, int(cached), cache_hit=True)

    def put(self, key: str, model: str, completion: Completion) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                conn = self._connection()
                with conn:
                    conn.execute(
                        "INSERT OR REPLACE INTO completions (key, model, text, prompt_tokens, completion_tokens, "
                        "cached_prompt_tokens, finish_reason, cost_usd, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, model, completion.text, completion.prompt_tokens, completion.completion_tokens,
                         completion.cached_prompt_tokens, completion.finish_reason, completion.cost_usd, time.time()))
            except (OSError, sqlite3.Error) as exc:
                self._failed("written", exc)

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # A model sent to a Ray task or a worker process takes the path, not the connection.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]


class CachedModel(ModelWrapper):
    """`inner` behind the completion cache. `hits` and `misses` count this wrapper's calls."""

    def __init__(self, inner: ChatModel, cache: CompletionCache | str | Path):
        super().__init__(inner)
        self.cache = cache if isinstance(cache, CompletionCache) else CompletionCache(cache)
        self.hits = 0
        self.misses = 0
        self._count_lock = threading.Lock()

    def _lookup(self, messages: list[Message], max_new_tokens: int, temperature: float, extra: dict[str, Any]
                ) -> tuple[str, Completion | None]:
        key = cache_key(self.inner, messages, max_new_tokens, temperature, extra.get("response_format"))
        found = self.cache.get(key)
        with self._count_lock:
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
        if found is not None and extra.get("on_text") is not None:
            extra["on_text"](found.text)  # a streaming caller gets the text in one piece
        return key, found

    def _calling(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra
                 ) -> Steps[Completion]:
        key, found = self._lookup(messages, max_new_tokens, temperature, extra)
        if found is not None:
            return found
        completion = yield from super()._calling(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix,
                                                 **extra)
        self.cache.put(key, self.inner.name, completion)
        return completion

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_count_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._count_lock = threading.Lock()


def with_cache(model: ChatModel, cache: "bool | str | Path | CompletionCache | None", default_folder: Path
               ) -> ChatModel:
    """`model` behind the completion cache `cache` asks for: True (DEFAULT_FOLDER/completions.sqlite), a path, a
    CompletionCache; None or False: `model` as it is."""
    if cache is None or cache is False:
        return model
    if cache is True:
        cache = default_folder / CACHE_FILE
    return CachedModel(model, cache)
