"""Registries that installed packages extend through entry points, the way `llm` plugins add models.

Each kind of extension has one `Registry` and one entry-point group:

| group                  | entry point name          | object it loads                                   | registry in            |
| ---------------------- | ------------------------- | ------------------------------------------------- | ---------------------- |
| `longread.loaders`     | a file extension (`docx`) | `loader(path) -> str or Document`                 | `longread.documents`   |
| `longread.backends`    | a model-string prefix     | `factory(model_string, **options) -> ChatModel`   | `longread.backends`    |
|                        |                           | or a `longread.backends.Backend`                  |                        |
| `longread.kv_policies` | a `--kv` prefix (`topk`)  | `builder(*args: str) -> KVPolicy`                 | `longread.backends.kv` |
| `longread.strategies`  | a `--strategy` name       | a strategy factory (see `longread.workflows`)     | `longread.workflows`   |

A package declares them in its pyproject.toml, and `pip install` is all a user does:

    [project.entry-points."longread.loaders"]
    docx = "longread_docx:load"

Names are read from the installed packages' metadata without importing them (so `--help` stays fast); a plugin
module is imported the first time its name is used. A plugin that fails to import is a `PluginError` naming the
entry point, raised where it is used, never at start-up.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import LongreadError

T = TypeVar("T")

LOADERS = "longread.loaders"
BACKENDS = "longread.backends"
KV_POLICIES = "longread.kv_policies"
STRATEGIES = "longread.strategies"
GROUPS = (LOADERS, BACKENDS, KV_POLICIES, STRATEGIES)


class PluginError(LongreadError):
    """An installed plugin could not be loaded; the message names its entry point and the reason."""


@lru_cache(maxsize=1)
def _all_entry_points() -> dict[str, tuple[EntryPoint, ...]]:
    """Our groups' entry points, from one scan of the installed packages (each scan reads every package's metadata)."""
    found = entry_points()
    return {group: tuple(found.select(group=group)) for group in GROUPS}


def _entry_points(group: str) -> tuple[EntryPoint, ...]:
    if group in GROUPS:
        return _all_entry_points()[group]
    return tuple(entry_points(group=group))


def refresh() -> None:
    """Forget the entry points read so far (after installing a package in a running process, and in tests)."""
    _all_entry_points.cache_clear()


def installed(group: str) -> dict[str, EntryPoint]:
    """The entry points of a group by name, read from package metadata (nothing is imported)."""
    return {ep.name: ep for ep in _entry_points(group)}


def resolve(reference: str) -> Any:
    """The object a "module:attribute" reference names (how built-ins register lazily, without an import)."""
    module, _, attribute = reference.partition(":")
    value: Any = import_module(module)
    for part in filter(None, attribute.split(".")):
        value = getattr(value, part)
    return value


def load_entry_point(group: str, entry: EntryPoint) -> Any:
    try:
        return entry.load()
    except Exception as exc:  # noqa: BLE001 - any import-time failure of a third-party package
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        dist = getattr(entry.dist, "name", None)
        where = f" (package {dist})" if dist else ""
        raise PluginError(f"plugin {entry.name} = {entry.value} in {group}{where} cannot be loaded: {reason}") from exc


class Registry(Generic[T]):
    """Names -> objects: registered in this process (`register`) or found in installed packages' entry points.

    A value registered as a "module:attribute" string is imported on first use, like an entry point, so the
    built-ins cost nothing until they are used. `normalize` maps a name to its key (e.g. extensions lower-cased,
    without the dot). Names registered in the process win over entry points of the same name.
    """

    def __init__(self, group: str, *, normalize: Callable[[str], str] = str):
        self.group = group
        self.normalize = normalize
        self._registered: dict[str, T | str] = {}
        self._loaded: dict[str, T] = {}  # lazy references and entry points, once imported
        self._lock = threading.Lock()

    def register(self, name: str, value: T | str) -> None:
        with self._lock:
            self._registered[self.normalize(name)] = value
            self._loaded.pop(self.normalize(name), None)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._registered.pop(self.normalize(name), None)
            self._loaded.pop(self.normalize(name), None)

    def _plugins(self) -> dict[str, EntryPoint]:
        return {self.normalize(name): ep for name, ep in installed(self.group).items()}

    def names(self) -> list[str]:
        """Every name, registered or installed, in registration order then the plugins' (no import)."""
        names = list(self._registered)
        names += [name for name in self._plugins() if name not in self._registered]
        return names

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.normalize(name) in self.names()

    def is_plugin(self, name: str) -> bool:
        key = self.normalize(name)
        return key not in self._registered and key in self._plugins()

    def get(self, name: str) -> T | None:
        """The object for a name, importing it on first use; None when nothing has that name."""
        key = self.normalize(name)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            value = self._registered.get(key)
        if value is None:
            entry = self._plugins().get(key)
            if entry is None:
                return None
            value = load_entry_point(self.group, entry)
        elif isinstance(value, str):
            value = resolve(value)
        else:
            return value
        with self._lock:
            self._loaded[key] = value  # imported once
        return value  # type: ignore[return-value]

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            value = self.get(name)
            if value is not None:
                yield name, value
