"""longread: read documents far longer than a model's window.

    import longread
    result = longread.ask("book.txt", "Who is the narrator?", model="local")
    print(result.answer, result.citations, result.usage)
"""

from . import _env  # noqa: F401  (offline settings before any heavy import)
from .documents import Document, load_document
from .errors import (DocumentError, DocumentTooLong, LongreadError, ModelError, StrategyError, WindowExceeded,
                     WindowTooSmall)
from .reader import Reader, aask, ask, asummarize, summarize
from .results import CallRecord, ChainEvent, Citation, ReadEvent, Result, Usage
from .workflows import Strategy, available_strategies, get_strategy, register_strategy

__version__ = "0.1.0"

__all__ = [
    "CallRecord", "ChainEvent", "Citation", "Document", "DocumentError", "DocumentTooLong", "LongreadError",
    "ModelError", "ReadEvent", "Reader", "Result", "Strategy", "StrategyError", "Usage", "WindowExceeded",
    "WindowTooSmall", "aask", "ask", "asummarize", "available_strategies", "get_strategy", "load_document",
    "register_strategy", "summarize",
]
