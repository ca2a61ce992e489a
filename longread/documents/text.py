"""Plain text (.txt): the bytes decoded (encoding.py), nothing else."""

from __future__ import annotations

from pathlib import Path

from .base import Format, Loaded
from .encoding import decode


def read(file: Path, source: str) -> Loaded:
    text, encoding = decode(file.read_bytes(), source)
    return text, "", {"encoding": encoding}


FORMAT = Format("text", (".txt",), read, content_types=("text/plain",))
