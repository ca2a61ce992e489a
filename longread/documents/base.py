"""What every part of the package shares: the Document, the format record, and the small helpers of their errors."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DocumentError

TEXT_SOURCE = "<text>"
DEFAULT_MAX_BYTES = 200 * 1024 * 1024

Loaded = tuple[str, str, dict[str, Any]]  # text, title ("" for none), metadata


class EncodingFallbackWarning(UserWarning):
    """A text file was neither UTF-8 nor UTF-16/32 with a BOM, so it was decoded as latin-1 (may be wrong)."""


@dataclass(frozen=True)
class Document:
    """The text of one document, where it came from, its title and what the loader learnt about it."""

    text: str
    source: str = TEXT_SOURCE
    title: str = "untitled"
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_text(cls, text: str, title: str = "untitled", source: str = TEXT_SOURCE) -> Document:
        """A document made from a string (newlines normalized to \\n). Blank text is a DocumentError."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if not text.strip():
            raise DocumentError(source, "empty document (the string is empty or only whitespace)")
        return cls(text=normalize_newlines(text), source=source, title=title)


@dataclass(frozen=True)
class Format:
    """One document format: its file extensions, the content types a server sends it as, how bytes without a name
    are recognised as it, and its loader.

    - `read(file, source) -> (text, title or "", metadata)`: its errors are DocumentError(source, reason), so
      they name a URL or stdin rather than the temporary file those are read through.
    - `magic`: the bytes a file of this format starts with; `sniff(data)`: whether bytes are this format (with
      `magic`, a further check). Formats known by their magic bytes are tried before those known by content.
    - `archive`: files of this format may be zip archives, checked against zip bombs before `read` (check_archive).
    """

    name: str
    extensions: tuple[str, ...]
    read: Callable[[Path, str], Loaded]
    content_types: tuple[str, ...] = ()
    magic: tuple[bytes, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    archive: bool = False

    def recognises(self, data: bytes) -> bool:
        if self.magic and not data.startswith(self.magic):
            return False
        return self.sniff(data) if self.sniff is not None else bool(self.magic)


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def link_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with a path that is a symbolic link leading nowhere (a loop, or a broken link); None when it
    is not one (it leads somewhere, or it is no link)."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself)"
    try:
        target = os.readlink(path)
    except OSError:
        return "a broken symbolic link"
    return f"a broken symbolic link (to {target}, which does not exist)"


def missing(path: Path, otherwise: str) -> str:
    """Why a path that does not exist does not: a symbolic link that loops or points nowhere, else `otherwise`."""
    return link_problem(path) or otherwise


def one_line(text: str) -> str:
    return " ".join(text.split())


def human_size(n: int) -> str:
    """A size people read ("1.5 MiB"), with the exact count for whoever compares it with ls."""
    scaled = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{n:,} bytes" if n < 1024 else f"{scaled:.1f} {unit} ({n:,} bytes)"


def describe(exc: BaseException) -> str:
    message = one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
