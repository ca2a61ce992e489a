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
    """A model could not be loaded or called (after retries, where retrying made sense).

    When a call failed, `model` names the model string, `error_type` the provider's error (its class name:
    RateLimitError, AuthenticationError, ...; a run stops on some) and `attempts` how many were made; otherwise
    they are None, "" and 0."""

    def __init__(self, message: str, *, model: str | None = None, error_type: str = "", attempts: int = 0):
        super().__init__(message)
        self.model = model
        self.error_type = error_type
        self.attempts = attempts


class StrategyError(LongreadError, ValueError):
    """A strategy cannot read this document this way (an unknown strategy, rag asked for a summary, ...)."""


class DocumentTooLong(LongreadError):
    """The whole document does not fit one call (the `full` strategy). Raised before any call."""

    def __init__(self, needed: int, limit: int, what: str = "the document"):
        self.needed = needed
        self.limit = limit
        super().__init__(
            f"{what} needs {needed:,} tokens in one call (text, instructions and answer), over the model's context "
            f"of {limit:,}: use another --strategy (chain reads it in parts) or a model with a longer context"
        )


class DamagedDataWarning(UserWarning):
    """Part of a file longread keeps (a memory item, a runs-log row, a results line) could not be read and was left
    out; the message names the file and what is lost. The rest of the file is used as before."""


class GPUMemoryExceeded(ModelError):
    """A call cannot fit the GPU memory the local engine may use (--gpu-memory), even with nothing else running.
    Raised before the model runs; the message names the sizes."""
