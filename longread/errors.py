"""Every error longread raises on purpose derives from LongreadError, so callers can catch one type."""

from __future__ import annotations

from pathlib import Path


class LongreadError(Exception):
    """Base class of longread's own errors."""


class DocumentError(LongreadError):
    """A document could not be read. The message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WindowExceeded(LongreadError):
    """A call would not fit its window: prompt tokens + max_new_tokens > window. Raised before the model runs."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int, window: int, what: str = "call"):
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.window = window
        super().__init__(
            f"{what} needs {prompt_tokens} prompt tokens + {max_new_tokens} new tokens "
            f"= {prompt_tokens + max_new_tokens}, over the window of {window}"
        )


class WindowTooSmall(LongreadError):
    """The window cannot hold the fixed parts of a prompt plus a minimum of document text."""


class ModelError(LongreadError):
    """A model could not be loaded or called (after retries, where retrying made sense)."""
