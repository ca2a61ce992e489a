"""PDF (.pdf): the text of every page (pypdf), its metadata's title and author; encrypted, damaged and scanned
files are each one clear error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import DocumentError
from .base import Format, Loaded, describe, one_line

# pypdf logs what it repairs ("EOF marker not found") on its logger and adds no handler, so Python's last-resort
# handler would print those lines to stderr next to our one-line error; a NullHandler stops only that fallback.
logging.getLogger("pypdf").addHandler(logging.NullHandler())


def read(file: Path, source: str) -> Loaded:
    # pypdf raises many exception types on damaged files (PdfReadError, ValueError, KeyError, ...): wrap them all.
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(file)
    except Exception as exc:
        raise DocumentError(source, f"corrupt PDF ({describe(exc)})") from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except DependencyError as exc:  # AES without the `cryptography` package
            raise DocumentError(source, f"encrypted PDF that cannot be decrypted here ({exc})") from exc
        except Exception as exc:
            raise DocumentError(source, f"encrypted PDF that cannot be decrypted ({describe(exc)})") from exc
        if not opened:
            raise DocumentError(source, "encrypted PDF: it needs a password (decrypt it first, e.g. qpdf --decrypt)")
    try:
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:
        raise DocumentError(source, f"corrupt PDF ({describe(exc)})") from exc
    if not pages:
        raise DocumentError(source, "corrupt PDF (no pages)")
    metadata: dict[str, Any] = {"pages": len(pages)}
    info = _pdf_info(reader)
    metadata.update(info)
    text = "\n\n".join(page.strip("\n") for page in pages if page.strip())
    if not text.strip():
        raise DocumentError(source, f"no extractable text in {len(pages)} page{'s' * (len(pages) != 1)} "
                                    "(perhaps only scanned images: run OCR on it first)")
    return text, info.get("title", ""), metadata


def _pdf_info(reader: Any) -> dict[str, str]:
    info: dict[str, str] = {}
    try:  # damaged metadata should not cost us the text
        meta = reader.metadata
        for key in ("title", "author"):
            value = getattr(meta, key, None) if meta is not None else None
            if isinstance(value, str) and value.strip():
                info[key] = one_line(value)
    except Exception:
        pass
    return info


FORMAT = Format("pdf", (".pdf",), read, content_types=("application/pdf",), magic=(b"%PDF",))
