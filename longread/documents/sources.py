"""What a user passes or a command line names -> a Document: a Document, a path, a string of text, `-` (standard
input) or an http(s) URL. Bytes without a file name (stdin, a download) are written to a temporary file and read
by the loader of their format: the Content-Type's, the URL's extension, else what the bytes look like."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from ..errors import DocumentError
from .base import DEFAULT_MAX_BYTES, Document, describe, human_size, one_line
from .loading import load_document
from .registry import extension_for_content_type, extension_key, sniff_extension, supported_extensions

STDIN = "-"
STDIN_SOURCE = "<stdin>"
URL_TIMEOUT_SECONDS = 30.0  # the longest network wait of a download (to connect, or for the next bytes)
URL_DEADLINE_SECONDS = 300.0  # a whole download, however slowly the bytes drip
MAX_REDIRECTS = 10

# as_document treats a longer string, or one with a newline, as text even if it ends in ".txt".
_MAX_PATH_CHARS = 4096


def as_document(source: str | os.PathLike[str] | Document) -> Document:
    """Turn what a user passed into a Document.

    The rule:
    - a `Document` is returned as it is;
    - a `Path` (any `os.PathLike`) is loaded with `load_document`;
    - a `str` that is an http(s) URL (one line, no spaces) is fetched (`fetch_url`);
    - a `str` is loaded as a path when it names an existing file or folder, or when it ends in a supported
      extension (`supported_extensions()`), has no newline and is short (at most 4096 characters); a missing
      "notes.txt" is therefore a `DocumentError` ("no such file"), not a document whose text is "notes.txt";
    - a `str` that looks like a file name (one word of letters with digits, dots, dashes or slashes: "chapter1",
      "report.docx") and names nothing is a `DocumentError`: it is a file name with its extension left off or
      mistyped far more often than a document (`Document.from_text` reads any string);
    - any other `str` is the text itself (`Document.from_text`).
    """
    if isinstance(source, Document):
        return source
    if isinstance(source, os.PathLike):
        return load_document(source)
    if isinstance(source, str):
        if is_url(source):
            return fetch_url(source)
        if _looks_like_path(source):
            return load_document(source)
        if _FILE_NAME_LIKE.fullmatch(source) and re.search("[A-Za-z]", source) and re.search(r"[\d._/-]", source):
            raise DocumentError(source, "no such file (a one-word string is read as a file name; pass "
                                "longread.Document.from_text(...) to read it as text)")
        return Document.from_text(source)
    raise TypeError(f"expected a path, a string of text or a Document, not {type(source).__name__}")


_FILE_NAME_LIKE = re.compile(r"[A-Za-z0-9_.\-/~]{2,255}")


def _looks_like_path(text: str) -> bool:
    if not text or "\n" in text or "\r" in text or len(text) > _MAX_PATH_CHARS:
        return False
    path = Path(text)
    if path.suffix.lower() in supported_extensions():
        return True
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the OS, or with a NUL: not a path
        return False


def is_url(text: str) -> bool:
    head = text[:8].lower()
    return (head.startswith("http://") or head.startswith("https://")) and not any(c.isspace() for c in text)


def load_bytes(data: bytes, source: str, *, extension: str | None = None, name: str = "document",
               max_bytes: int = DEFAULT_MAX_BYTES, metadata: dict[str, Any] | None = None) -> Document:
    """A Document from bytes (stdin, a download): written to a temporary file so every loader, plugins' too,
    reads it the same way; errors and Document.source name `source`. `extension`: the format (default: sniffed);
    `name`: the title when the format gives none."""
    import tempfile

    if len(data) > max_bytes:
        raise DocumentError(source, f"too large: over the limit of {human_size(max_bytes)}")
    extension = extension_key(extension) if extension else sniff_extension(data)
    stem = re.sub(r"[^\w.-]+", "_", name).strip("._")[:80] or "document"
    with tempfile.TemporaryDirectory(prefix="longread-") as folder:
        file = Path(folder) / f"{stem}{extension}"
        file.write_bytes(data)
        document = load_document(file, max_bytes=max_bytes, source=source)
    extra = {**document.metadata, **(metadata or {})}
    return Document(text=document.text, source=source, title=document.title, metadata=extra)


def read_stdin(*, max_bytes: int = DEFAULT_MAX_BYTES, stream: Any = None) -> Document:
    """Standard input as a Document (`-` on the command line); its format is sniffed from the bytes."""
    import sys

    stream = stream if stream is not None else sys.stdin.buffer
    data = stream.read(max_bytes + 1)
    if not data:
        raise DocumentError(STDIN_SOURCE, "empty input (nothing was piped in)")
    return load_bytes(data, STDIN_SOURCE, name="stdin", max_bytes=max_bytes)


def fetch_url(url: str, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = URL_TIMEOUT_SECONDS,
              deadline: float | None = None) -> Document:
    """Downloads an http(s) URL into a Document; the format comes from the Content-Type, else the URL's extension,
    else the bytes. Every failure is a DocumentError naming the URL: offline, unreachable, an HTTP error, a reply
    that is malformed or shorter than its declared length, a redirect to anything but http(s), a body over
    `max_bytes` once decoded, no answer within `timeout` seconds, or a download not finished within `deadline`
    seconds (default URL_DEADLINE_SECONDS) in all."""
    from urllib.parse import unquote, urlparse

    data, content_type, final_url = _download(url, max_bytes, timeout,
                                              URL_DEADLINE_SECONDS if deadline is None else deadline)
    if not data:
        raise DocumentError(url, "empty response (0 bytes)")
    path = unquote(urlparse(final_url).path)
    suffix = Path(path).suffix.lower()
    extension = extension_for_content_type(content_type) or (suffix if suffix in supported_extensions() else None)
    if content_type in ("text/plain", "application/octet-stream", "") and suffix in supported_extensions():
        extension = suffix  # a server that calls everything text/plain: trust the name
    name = Path(path).stem or urlparse(final_url).hostname or "document"
    return load_bytes(data, url, extension=extension, name=name, max_bytes=max_bytes,
                      metadata={"url": final_url, "content_type": content_type})


def _download(url: str, max_bytes: int, timeout: float, deadline: float) -> tuple[bytes, str, str]:
    """(the decoded body, its content type, the URL it came from after redirects), or a DocumentError.

    httpx does the HTTP (it refuses malformed status lines, broken chunks, over-long headers and bodies cut
    short); this follows redirects itself so that each hop's scheme is checked, and reads the body in pieces so
    that the size cap applies to the decoded bytes and the deadline to the whole download (each network wait is
    bounded by `timeout`, and by the time left)."""
    import httpx

    from .._version import __version__

    started = time.monotonic()

    def left() -> float:
        return deadline - (time.monotonic() - started)

    def late() -> DocumentError:
        return DocumentError(url, f"cannot fetch: not finished within {deadline:g} s")

    try:
        with httpx.Client(headers={"User-Agent": f"longread/{__version__}"}, follow_redirects=False) as client:
            request = client.build_request("GET", url)
            for _hop in range(MAX_REDIRECTS + 1):
                if left() <= 0:
                    raise late()
                request.extensions["timeout"] = httpx.Timeout(max(0.001, min(timeout, left()))).as_dict()
                response = client.send(request, stream=True)
                try:
                    if response.next_request is not None:  # a redirect
                        request = response.next_request
                        if request.url.scheme not in ("http", "https"):
                            raise DocumentError(url, f"cannot fetch: redirected to {one_line(str(request.url))[:200]}:"
                                                     " only http and https are followed")
                        continue
                    if response.status_code >= 400:
                        raise DocumentError(url, f"cannot fetch: HTTP {response.status_code} "
                                                 f"{one_line(response.reason_phrase)[:100]}".rstrip())
                    declared = response.headers.get("Content-Length", "")
                    if declared.isdigit() and not response.headers.get("Content-Encoding") and int(declared) > max_bytes:
                        raise DocumentError(url, f"too large: {human_size(int(declared))}, over the limit of {human_size(max_bytes)}")
                    pieces, size = [], 0
                    for piece in response.iter_bytes():
                        size += len(piece)
                        if size > max_bytes:
                            raise DocumentError(url, f"too large: over the limit of {human_size(max_bytes)}")
                        if left() <= 0:
                            raise late()
                        pieces.append(piece)
                    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    return b"".join(pieces), content_type, str(response.url)
                finally:
                    response.close()
            raise DocumentError(url, f"cannot fetch: more than {MAX_REDIRECTS} redirects")
    except DocumentError:
        raise
    except httpx.TimeoutException as exc:
        raise (late() if left() <= 0 else DocumentError(url, f"cannot fetch: no answer within {timeout:g} s")) from exc
    except httpx.ConnectError as exc:
        raise DocumentError(url, f"cannot fetch: {_connect_failure(exc)}") from exc
    except (httpx.RemoteProtocolError, httpx.DecodingError) as exc:
        raise DocumentError(url, f"cannot fetch: the server's reply is malformed or cut short "
                                 f"({one_line(str(exc))[:200]})") from exc
    except Exception as exc:  # noqa: BLE001 - whatever else fails, it is this URL's failure, not the run's
        raise DocumentError(url, f"cannot fetch: {describe(exc)[:300]}") from exc


def _connect_failure(exc: BaseException) -> str:
    import socket

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve (offline, or a wrong address)"
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect ({one_line(str(exc)) or type(exc).__name__})"


def load_source(spec: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """What a command line names: `-` (standard input), an http(s) URL, or a file path."""
    if spec == STDIN:
        return read_stdin(max_bytes=max_bytes)
    if is_url(spec):
        return fetch_url(spec, max_bytes=max_bytes)
    return load_document(spec, max_bytes=max_bytes)
