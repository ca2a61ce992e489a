"""Load documents (.txt .md .html .pdf .epub, and what plugins add) into one shape: `Document(text, source, title,
metadata)`, from a file, standard input (`-`) or an http(s) URL.

Each format is read by the library that does it well (pypdf, ebooklib, BeautifulSoup), in a module of its own
that declares its `Format` (extensions, content types, how its bytes are recognised, its loader):

    text.py markdown.py html.py pdf.py epub.py   one module per format (registry.BUILTIN lists them)
    base.py       Document, Format, and the helpers of their errors
    encoding.py   the encoding of text files; binary files refused
    registry.py   the formats by extension, plugins' loaders (entry points `longread.loaders`), sniffing
    loading.py    files below a folder; one file read by its format's loader, every failure a DocumentError
    sources.py    what a user or a command line names (a path, text, `-`, a URL) -> a Document

A new format is a module here with its FORMAT (and its name in registry.BUILTIN), or a plugin:

    [project.entry-points."longread.loaders"]
    docx = "longread_docx:load"
"""

from __future__ import annotations

from ..errors import DocumentError
from .base import DEFAULT_MAX_BYTES, TEXT_SOURCE, Document, EncodingFallbackWarning, Format, link_problem
from .html import html_to_text
from .loading import check_archive, find_documents, load_document
from .registry import LOADERS, SUPPORTED_EXTENSIONS, register_loader, supported_extensions
from .sources import (MAX_REDIRECTS, STDIN, STDIN_SOURCE, URL_DEADLINE_SECONDS, URL_TIMEOUT_SECONDS, as_document,
                      fetch_url, is_url, load_bytes, load_source, read_stdin)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_EXTENSIONS",
    "Document",
    "DocumentError",
    "EncodingFallbackWarning",
    "Format",
    "as_document",
    "check_archive",
    "fetch_url",
    "find_documents",
    "link_problem",
    "html_to_text",
    "is_url",
    "load_bytes",
    "load_document",
    "load_source",
    "read_stdin",
    "register_loader",
    "supported_extensions",
]
