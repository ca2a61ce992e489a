"""Reusing the (compressed) KV of prompt prefixes: an LRU with a byte budget, optionally kept on disk.

A Chain-of-Agents worker prompt is `[system][segment][previous notes][question][task]`; everything up to the end
of the segment does not depend on the question, so after one question about a book the KV of every segment can be
reused by the next (docs/architecture.md). Entries are keyed by model, KV policy, dtype and a hash of the prefix token ids.

What is stored is the cache right after prefilling the prefix, i.e. already compressed by the policy. A call that
reuses it continues exactly as a call that prefilled the prefix itself, because the engine always prefills a
marked prefix on its own first (same chunk boundaries, same observation window at the prefix's end for snap and
mixed), reuse or not.

On disk an entry is a `torch.save` of plain dicts of tensors and ints, loaded with `weights_only=True`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..kv import PolicyCache, cache_bytes, export_state, import_state

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 2**20
DEFAULT_MAX_DISK_BYTES = 4 * 2**30
FORMAT = 1


def prefix_key(model: str, policy: str, dtype: Any, ids: Sequence[int]) -> str:
    digest = hashlib.sha256(f"{FORMAT}\0{model}\0{policy}\0{dtype}\0".encode())
    digest.update(torch.tensor(list(ids), dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class PrefixCacheStats:
    entries: int = 0
    bytes: int = 0
    evictions: int = 0
    disk_hits: int = 0
    disk_writes: int = 0


@dataclass
class PrefixCache:
    """An LRU of prefix caches under `max_bytes` (their real stored bytes); with `directory`, also on disk."""

    max_bytes: int = DEFAULT_MAX_BYTES
    directory: Path | None = None
    max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES
    stats: PrefixCacheStats = field(default_factory=PrefixCacheStats)

    def __post_init__(self) -> None:
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        if self.directory is not None:
            self.directory = Path(self.directory).expanduser()
            self.directory.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        path = self._path(key)
        return key in self._entries or (path is not None and path.is_file())

    # -- lookups ---------------------------------------------------------------------------------------------
    def get(self, key: str, fresh_cache: Callable[[], Any], device: Any = None) -> Any | None:
        """A private copy of the cached prefix state, or None. `fresh_cache()` makes an empty cache to fill from disk."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return copy.deepcopy(entry[0])
        cache = self._load(key, fresh_cache, device)
        if cache is not None:
            self._remember(key, cache)
            return copy.deepcopy(cache)
        return None

    def put(self, key: str, cache: Any) -> None:
        """Stores a snapshot of cache (the caller goes on using its own)."""
        snapshot = copy.deepcopy(cache)
        self._remember(key, snapshot)
        self._save(key, snapshot)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.stats.entries = self.stats.bytes = 0

    # -- memory ----------------------------------------------------------------------------------------------
    def _remember(self, key: str, cache: Any) -> None:
        size = cache_bytes(cache)
        if size > self.max_bytes:
            return  # would evict everything else and still not fit
        with self._lock:
            if key in self._entries:
                self.stats.bytes -= self._entries.pop(key)[1]
            self._entries[key] = (cache, size)
            self.stats.bytes += size
            while self.stats.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.stats.bytes -= dropped
                self.stats.evictions += 1
            self.stats.entries = len(self._entries)

    # -- disk ------------------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.pt"

    def _save(self, key: str, cache: Any) -> None:
        path = self._path(key)
        if path is None or not isinstance(cache, PolicyCache):
            return
        try:
            # Write then rename, so a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            torch.save({"format": FORMAT, "policy": cache.policy.name, "state": export_state(cache)}, tmp)
            os.replace(tmp, path)
            self.stats.disk_writes += 1
            self._trim_disk()
        except OSError as exc:  # a full or read-only disk costs reuse, never the answer
            log.warning("%s: could not save a prefix cache: %s", path, exc)

    def _load(self, key: str, fresh_cache: Callable[[], Any], device: Any) -> Any | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location=device or "cpu", weights_only=True)
            cache = fresh_cache()
            if saved.get("format") != FORMAT or getattr(getattr(cache, "policy", None), "name", None) != saved["policy"]:
                return None
            import_state(cache, saved["state"], device)
            os.utime(path)  # recency for the disk LRU
            self.stats.disk_hits += 1
            return cache
        except Exception as exc:  # noqa: BLE001 - a damaged file is a miss, not an error
            log.warning("%s: unreadable prefix cache, ignored: %s", path, exc)
            return None

    def _trim_disk(self) -> None:
        assert self.directory is not None
        files = sorted(self.directory.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.max_disk_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)


_SHARED: dict[tuple[str | None, int], PrefixCache] = {}
_SHARED_LOCK = threading.Lock()


def shared_prefix_cache(directory: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> PrefixCache:
    """One process-wide cache per (directory, budget), so a new Reader on the same book still finds its segments."""
    key = (str(Path(directory).expanduser().resolve()) if directory else None, int(max_bytes))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = PrefixCache(max_bytes=max_bytes, directory=Path(key[0]) if key[0] else None)
        return _SHARED[key]
