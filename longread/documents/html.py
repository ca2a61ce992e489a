"""HTML (.html, .htm): the visible text, paragraph by paragraph, and the <title>. EPUB chapters are XHTML and are
read with `html_text_and_title` too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Format, Loaded, one_line
from .encoding import decode, decode_markup

if TYPE_CHECKING:
    from bs4 import BeautifulSoup


def read(file: Path, source: str) -> Loaded:
    from bs4.dammit import EncodingDetector

    data = file.read_bytes()
    text, encoding = decode(data, source, declared=EncodingDetector.find_declared_encoding(data, is_html=True))
    body, title = html_text_and_title(text)
    return body, title, {"encoding": encoding}


def sniff(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]


# Written by hand on BeautifulSoup's tree because get_text() loses block boundaries and keeps <script> text.
_INVISIBLE = frozenset({"script", "style", "noscript", "template", "head", "title", "iframe"})
_PARAGRAPH = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "ul", "ol", "dl", "table", "hr", "section",
    "article", "aside", "header", "footer", "nav", "main", "figure", "address", "fieldset", "form", "details",
})
_LINE = frozenset({"br", "li", "div", "tr", "dt", "dd", "figcaption", "caption", "summary", "legend", "option"})
_CELL = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


def html_to_text(markup: str | bytes) -> str:
    """The visible text of an HTML (or XHTML) page, with blank lines between paragraphs and headings,
    line breaks for <br>, list items, divs and table rows, and no script, style or <head> content."""
    if isinstance(markup, bytes):
        markup = decode_markup(markup)
    return html_text_and_title(markup)[0]


def html_text_and_title(markup: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup  # imported here: the CLI lists files with this module before any is read

    soup = BeautifulSoup(markup, "html.parser")
    title_tag = soup.find("title")
    title = one_line(title_tag.get_text()) if title_tag is not None else ""
    return _visible_text(soup), title


class _Break(int):
    """How many newlines an element boundary asks for (0 = a space, for table cells)."""


def _visible_text(soup: BeautifulSoup) -> str:
    from bs4 import NavigableString, Tag
    from bs4.element import PreformattedString

    out: list[str] = []
    pending: int | None = None  # newlines owed before the next text; None = nothing owed
    # An explicit stack rather than recursion: deeply nested pages would hit Python's recursion limit.
    stack: list[Any] = [(soup, False)]
    pre_depth = 0
    while stack:
        item = stack.pop()
        if isinstance(item, _Break):
            pending = item if pending is None else max(pending, item)
            continue
        node, leaving = item
        if leaving:
            pre_depth -= 1
            continue
        if isinstance(node, NavigableString):
            if isinstance(node, PreformattedString):  # comments, CDATA, doctype, processing instructions
                continue
            text = str(node) if pre_depth else _SPACES.sub(" ", str(node))
            if not pre_depth and not text.strip():
                if out and pending is None and not out[-1].endswith(" "):
                    out.append(" ")  # whitespace between inline elements is one space
                continue
            if pending is not None:
                if out:
                    out[-1] = out[-1].rstrip(" ")
                    out.append("\n" * pending if pending else " ")
                pending = None
                text = text if pre_depth else text.lstrip(" ")
            elif not out:
                text = text if pre_depth else text.lstrip(" ")
            elif not pre_depth and text.startswith(" ") and out[-1].endswith(" "):
                text = text.lstrip(" ")
            out.append(text)
            continue
        if not isinstance(node, Tag):
            continue
        name = (node.name or "").lower()
        if name in _INVISIBLE:
            continue
        boundary = 2 if name in _PARAGRAPH else 1 if name in _LINE else 0 if name in _CELL else None
        if name == "br":
            stack.append(_Break(1))
            continue
        if boundary is not None:
            stack.append(_Break(boundary))
        if name == "pre":
            pre_depth += 1
            stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.contents))
        if boundary is not None:
            stack.append(_Break(boundary))
    text = "".join(out)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


FORMAT = Format("html", (".html", ".htm"), read, content_types=("text/html", "application/xhtml+xml"), sniff=sniff)
