"""The formats by extension: the built-in ones (one module each, listed in BUILTIN) and those plugins add.

Installed packages add loaders through entry points (`longread.loaders`, see `longread.plugins`): a plugin's
loader is `loader(path) -> str | Document`, or a `Format` (then its content types and sniffing count too), e.g.

    [project.entry-points."longread.loaders"]
    docx = "longread_docx:load"
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any, Callable

from .. import plugins
from .base import Document, Format

# The built-in formats, one module each (its FORMAT); their extensions are listed in this order.
BUILTIN = ("text", "markdown", "html", "pdf", "epub")
FORMATS: tuple[Format, ...] = tuple(import_module(f"{__package__}.{name}").FORMAT for name in BUILTIN)
FALLBACK = "markdown"  # bytes no format recognises are read as text, with a Markdown title if they have one


def extension_key(name: str) -> str:
    """".pdf" for "pdf", ".PDF" or ".pdf": the registry's key."""
    name = name.strip().lower()
    return name if name.startswith(".") else f".{name}"


LOADERS: plugins.Registry[Any] = plugins.Registry(plugins.LOADERS, normalize=extension_key)
for _format in FORMATS:
    for _extension in _format.extensions:
        LOADERS.register(_extension, _format)

SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(LOADERS.names())  # built in


def register_loader(extension: str, loader: Callable[[Path], "str | Document"] | Format) -> None:
    """Read files ending in `extension` with `loader(path) -> str | Document` (the text, or a Document with its own
    title and metadata), or with a Format. Whatever a loader raises becomes a DocumentError naming the file."""
    LOADERS.register(extension, loader)


def supported_extensions() -> tuple[str, ...]:
    """The built-in extensions, then those that registered or installed loaders add (nothing is imported)."""
    return tuple(LOADERS.names())


def sniff_extension(data: bytes) -> str:
    """The extension of bytes that came without a file name: the first format known by its magic bytes that
    recognises them, else the first known by its content, else the fallback (text read as Markdown)."""
    for by_magic in (True, False):
        for known in FORMATS:
            if bool(known.magic) == by_magic and known.recognises(data):
                return known.extensions[0]
    return _builtin(FALLBACK).extensions[0]


def extension_for_content_type(content_type: str) -> str | None:
    """The extension of a built-in format a server's Content-Type names (`text/html` -> .html), or None."""
    for known in FORMATS:
        if content_type in known.content_types:
            return known.extensions[0]
    return None


def _builtin(name: str) -> Format:
    return next(known for known in FORMATS if known.name == name)
