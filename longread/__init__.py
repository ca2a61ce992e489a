"""longread: read documents far longer than a model's window.

    import longread
    result = longread.ask("book.txt", "Who is the narrator?", model="local")
    print(result.answer, result.citations, result.usage)

The names below are imported on first use (PEP 562): `import longread` and the command line's `--help` stay fast,
and langgraph, transformers and litellm load only when a read needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import _env  # noqa: F401  (offline settings before any heavy import)
from ._version import __version__

_EXPORTS = {
    "DEFAULT_PROMPTS": "agents.prompts", "Prompts": "agents.prompts",
    "Document": "documents", "load_document": "documents",
    "DocumentError": "errors", "DocumentTooLong": "errors", "LongreadError": "errors", "ModelError": "errors",
    "StrategyError": "errors", "WindowExceeded": "errors", "WindowTooSmall": "errors",
    "Reader": "reader", "aask": "reader", "ask": "reader", "asummarize": "reader", "summarize": "reader",
    "aask_many": "many", "ask_many": "many", "asummarize_many": "many", "summarize_many": "many",
    "CallRecord": "results", "ChainEvent": "results", "Citation": "results", "ReadEvent": "results",
    "Result": "results", "Usage": "results",
    "Strategy": "workflows", "available_strategies": "workflows", "get_strategy": "workflows",
    "register_strategy": "workflows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'longread' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from .agents.prompts import DEFAULT_PROMPTS, Prompts
    from .documents import Document, load_document
    from .errors import (DocumentError, DocumentTooLong, LongreadError, ModelError, StrategyError, WindowExceeded,
                         WindowTooSmall)
    from .many import aask_many, ask_many, asummarize_many, summarize_many
    from .reader import Reader, aask, ask, asummarize, summarize
    from .results import CallRecord, ChainEvent, Citation, ReadEvent, Result, Usage
    from .workflows import Strategy, available_strategies, get_strategy, register_strategy
