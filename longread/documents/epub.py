"""EPUB (.epub): the chapters of the reading order as text (ebooklib; each chapter's XHTML read like HTML), the
title and authors. An EPUB is a zip archive: it is checked against zip bombs before ebooklib opens it."""

from __future__ import annotations

import logging
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

from ..errors import DocumentError
from .base import Format, Loaded, describe, one_line
from .encoding import decode_markup
from .html import html_text_and_title

logger = logging.getLogger(__name__)

# ebooklib's own messages, reworded for people.
_EPUB_PROBLEMS = {
    "Bad Zip file": "not a zip archive",
    "Large Zip file": "zip archive too large",
    "Can not find container file": "missing its OPF package file",  # ebooklib calls the OPF "container file"
    "Can not find ncx file.": "missing its NCX table of contents",
}


def read(file: Path, source: str) -> Loaded:
    from ebooklib import ITEM_DOCUMENT, epub

    if not zipfile.is_zipfile(file):
        raise DocumentError(source, "corrupt EPUB (not a zip archive)")
    try:
        with warnings.catch_warnings():  # ebooklib warns about its future defaults on every read
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            book = epub.read_epub(str(file), options={"ignore_ncx": True})
    except epub.EpubException as exc:
        problem = _EPUB_PROBLEMS.get(exc.msg, str(exc.msg))
        raise DocumentError(source, f"corrupt EPUB ({problem})") from exc
    except KeyError as exc:  # zipfile: a file the package needs is not in the archive
        raise DocumentError(source, f"corrupt EPUB (missing {_missing_member(exc)})") from exc
    except Exception as exc:
        raise DocumentError(source, f"corrupt EPUB ({describe(exc)})") from exc

    chapters: list[str] = []
    missing: list[str] = []
    try:
        for idref, _linear in book.spine:
            item = book.get_item_with_id(idref)
            if item is None:
                missing.append(str(idref))
                continue
            # The navigation document is a table of contents, not part of the text.
            if item.get_type() != ITEM_DOCUMENT or isinstance(item, epub.EpubNav):
                continue
            text, _ = html_text_and_title(decode_markup(item.get_content()))
            if text.strip():
                chapters.append(text)
    except Exception as exc:
        raise DocumentError(source, f"corrupt EPUB ({describe(exc)})") from exc
    if missing:
        names = ", ".join(repr(m) for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        if not chapters:
            raise DocumentError(source, f"corrupt EPUB (its reading order names {names}, missing from its manifest)")
        logger.warning("%s: its reading order names %s, missing from its manifest; read without them", source, names)

    metadata: dict[str, Any] = {"chapters": len(chapters)}
    for key, dc_name in (("title", "title"), ("author", "creator")):
        values = [one_line(str(value)) for value, _attrs in book.get_metadata("DC", dc_name) if value]
        if values and values[0]:
            metadata[key] = ", ".join(v for v in values if v) if key == "author" else values[0]
    return "\n\n".join(chapters), metadata.get("title", ""), metadata


def _missing_member(exc: KeyError) -> str:
    # zipfile says "There is no item named 'META-INF/container.xml' in the archive".
    match = re.search(r"named '([^']+)'", str(exc.args[0]) if exc.args else "")
    return match.group(1) if match else "a file it names"


def sniff(data: bytes) -> bool:
    return b"application/epub+zip" in data[:200]  # the `mimetype` member, stored first and uncompressed


FORMAT = Format("epub", (".epub",), read, content_types=("application/epub+zip",), magic=(b"PK\x03\x04",),
                sniff=sniff, archive=True)
