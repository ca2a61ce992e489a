"""Markdown (.md, .markdown): decoded like text; the title is the first "# heading". Bytes that no format
recognises are read as Markdown too (registry.py)."""

from __future__ import annotations

import re
from pathlib import Path

from .base import Format, Loaded
from .encoding import decode


def read(file: Path, source: str) -> Loaded:
    text, encoding = decode(file.read_bytes(), source)
    return text, markdown_title(text), {"encoding": encoding}


_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_title(text: str) -> str:
    """The first level-1 ATX heading ("# Title") outside fenced code blocks, or ""."""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := _ATX_H1.match(line)):
            return match.group(1).strip()
    return ""


FORMAT = Format("markdown", (".md", ".markdown"), read, content_types=("text/markdown", "text/x-markdown"))
