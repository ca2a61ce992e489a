"""longread: read documents far longer than a model's window.

    import longread
    result = longread.ask("book.txt", "Who is the narrator?", model="local")
    print(result.answer, result.citations, result.usage)
"""

from . import _env  # noqa: F401  (offline settings before any heavy import)
from .documents import Document, load_document
from .errors import DocumentError, LongreadError, ModelError, WindowExceeded, WindowTooSmall
from .reader import ChainEvent, Reader, aask, ask, asummarize, summarize
from .results import CallRecord, Citation, Result, Usage

__version__ = "0.1.0"

__all__ = [
    "CallRecord", "ChainEvent", "Citation", "Document", "DocumentError", "LongreadError", "ModelError", "Reader",
    "Result", "Usage", "WindowExceeded", "WindowTooSmall", "aask", "ask", "asummarize", "load_document", "summarize",
]
