"""Load documents (.txt .md .html .pdf .epub, and what plugins add) into one shape: `Document(text, source, title,
metadata)`, from a file, standard input (`-`) or an http(s) URL.

Each format is read by the library that does it well (pypdf, ebooklib, BeautifulSoup); this module only
decides the encoding of text files, turns HTML into readable text, and turns every failure into a
`DocumentError` that names the file and says why, so a folder run can report it and go on.

Loaders are found by extension in a registry that installed packages extend (entry points `longread.loaders`,
see `longread.plugins`): a plugin's loader is `loader(path) -> str | Document`, e.g.

    [project.entry-points."longread.loaders"]
    docx = "longread_docx:load"
"""

from __future__ import annotations

import codecs
import errno
import logging
import os
import re
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import plugins
from .errors import DocumentError

if TYPE_CHECKING:
    from bs4 import BeautifulSoup

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_EXTENSIONS",
    "Document",
    "EncodingFallbackWarning",
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

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".epub")  # built in
TEXT_SOURCE = "<text>"
STDIN = "-"
STDIN_SOURCE = "<stdin>"
URL_TIMEOUT_SECONDS = 30.0  # the longest network wait of a download (to connect, or for the next bytes)
URL_DEADLINE_SECONDS = 300.0  # a whole download, however slowly the bytes drip
MAX_REDIRECTS = 10

# as_document treats a longer string, or one with a newline, as text even if it ends in ".txt".
_MAX_PATH_CHARS = 4096


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
        return cls(text=_normalize_newlines(text), source=source, title=title)


# -- choosing what to load --------------------------------------------------------------------------------------------
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


def find_documents(path: str | os.PathLike[str], *,
                   on_error: Callable[[Path, str], None] | None = None) -> list[Path]:
    """The files to read at `path`: the file itself, or every supported file below a folder.

    Folders are walked recursively and sorted; hidden files and folders (".git", ".cache", ...) are skipped.
    A file is returned whatever its extension, so that load_document can say why it is unsupported.
    A subfolder that cannot be listed is passed to `on_error(folder, reason)` (default: logged as a warning),
    and the walk goes on.
    """
    root = Path(path)
    if not root.exists():
        raise DocumentError(path, _missing(root, "no such file or folder"))
    if not root.is_dir():
        return [root]

    def unreadable(error: OSError) -> None:
        where = Path(error.filename) if error.filename else root
        reason = f"cannot list this folder: {error.strerror or error}"
        if on_error is not None:
            on_error(where, reason)
        else:
            logger.warning("%s: %s", where, reason)

    found: list[Path] = []
    # os.walk does not follow symlinked folders, so a link loop cannot send it round forever.
    for folder, subfolders, files in os.walk(root, onerror=unreadable):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        extensions = supported_extensions()
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                found.append(Path(folder) / name)
    return sorted(found)


# -- loading ----------------------------------------------------------------------------------------------------------
def load_document(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
                  source: str | None = None) -> Document:
    """Read one file into a Document. Any problem with the file raises DocumentError(path, reason).

    Title: the HTML <title>, the PDF or EPUB metadata title, a markdown file's first "# heading",
    else the file name without its extension. `source` names the document in errors and in Document.source
    (default: the path; stdin and URLs are read through a temporary file and keep their own name).
    """
    file = Path(path)
    source = str(path) if source is None else source
    try:
        if not file.exists():
            raise DocumentError(source, _missing(file, "no such file"))
        if file.is_dir():
            raise DocumentError(source, "is a directory, not a file (name one of the files in it)")
        if not file.is_file():
            raise DocumentError(source, "not a regular file")
        extension = file.suffix.lower()
        loader = LOADERS.get(extension) if extension else None
        if loader is None:
            what = f"unsupported file type {extension!r}" if extension else "no file extension"
            raise DocumentError(source, f"{what} (supported: {' '.join(supported_extensions())})")
        size = file.stat().st_size
        if size > max_bytes:
            raise DocumentError(
                source, f"too large: {_size(size)}, over the limit of {_size(max_bytes)} (pass max_bytes to raise it)")
        if size == 0:
            raise DocumentError(source, "empty file (0 bytes)")
        if extension not in _NOT_ARCHIVES:
            check_archive(file, source, max_bytes)
        text, title, metadata = _read_with(loader, extension, file, source)
    except plugins.PluginError as exc:
        raise DocumentError(source, str(exc)) from exc
    except OSError as exc:  # permission denied, a file removed while we read it, ...
        raise DocumentError(source, f"cannot read: {exc.strerror or exc}") from exc
    text = _normalize_newlines(text)
    if not text.strip():
        raise DocumentError(source, "no extractable text (only whitespace or markup)")
    metadata = {"format": extension.lstrip("."), "bytes": size, **metadata}
    return Document(text=text, source=source, title=_one_line(title) or file.stem, metadata=metadata)


Loaded = tuple[str, str, dict[str, Any]]  # text, title ("" for none), metadata

# The built-in formats whose loaders never inflate a zip archive; every other one (EPUB, a plugin's .docx) may be one.
_NOT_ARCHIVES = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".pdf"})
# Deflate gains at most 1032:1, on runs of one byte; text and XHTML give 3-10:1. A member of a book over
# MAX_ZIP_RATIO:1 is a bomb, not a chapter (small members may compress as well as they like).
MAX_ZIP_RATIO = 100
_ZIP_RATIO_FLOOR = 1 << 20
MAX_ZIP_MEMBERS = 100_000


def check_archive(file: Path, source: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuses a zip archive (EPUB, or a plugin's format) that would inflate past `max_bytes` in all, or whose
    members inflate suspiciously well, from its central directory alone: nothing is inflated. zipfile stops reading
    a member at the size the directory declares, so a directory that lies cannot get past this. Files that are not
    zip archives pass (their loader says what is wrong with them)."""
    if not zipfile.is_zipfile(file):
        return
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        return  # the loader reports a damaged archive in its own words
    if len(members) > MAX_ZIP_MEMBERS:
        raise DocumentError(source, f"unsafe archive: {len(members):,} members, over the limit of "
                                    f"{MAX_ZIP_MEMBERS:,} (a zip bomb?)")
    total = sum(member.file_size for member in members)
    if total > max_bytes:
        raise DocumentError(source, f"unsafe archive: it would inflate to {_size(total)}, over the limit of "
                                    f"{_size(max_bytes)} (pass max_bytes to raise it)")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > _ZIP_RATIO_FLOOR and ratio > MAX_ZIP_RATIO:
            raise DocumentError(source, f"unsafe archive: {_one_line(member.filename)[:80]} would inflate to "
                                        f"{_size(member.file_size)} from {_size(member.compress_size)} "
                                        f"({ratio:,.0f}:1, more than {MAX_ZIP_RATIO}:1 is refused as a zip bomb)")


def _load_text(file: Path, source: str) -> Loaded:
    text, encoding = _decode(file.read_bytes(), source)
    return text, "", {"encoding": encoding}


def _load_markdown(file: Path, source: str) -> Loaded:
    text, encoding = _decode(file.read_bytes(), source)
    return text, _markdown_title(text), {"encoding": encoding}


def _load_html(file: Path, source: str) -> Loaded:
    from bs4.dammit import EncodingDetector

    data = file.read_bytes()
    text, encoding = _decode(data, source, declared=EncodingDetector.find_declared_encoding(data, is_html=True))
    body, title = _html_text_and_title(text)
    return body, title, {"encoding": encoding}


# pypdf logs what it repairs ("EOF marker not found") on its logger and adds no handler, so Python's last-resort
# handler would print those lines to stderr next to our one-line error; a NullHandler stops only that fallback.
logging.getLogger("pypdf").addHandler(logging.NullHandler())


def _load_pdf(file: Path, source: str) -> Loaded:
    # pypdf raises many exception types on damaged files (PdfReadError, ValueError, KeyError, ...): wrap them all.
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(file)
    except Exception as exc:
        raise DocumentError(source, f"corrupt PDF ({_describe(exc)})") from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except DependencyError as exc:  # AES without the `cryptography` package
            raise DocumentError(source, f"encrypted PDF that cannot be decrypted here ({exc})") from exc
        except Exception as exc:
            raise DocumentError(source, f"encrypted PDF that cannot be decrypted ({_describe(exc)})") from exc
        if not opened:
            raise DocumentError(source, "encrypted PDF: it needs a password (decrypt it first, e.g. qpdf --decrypt)")
    try:
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:
        raise DocumentError(source, f"corrupt PDF ({_describe(exc)})") from exc
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
                info[key] = _one_line(value)
    except Exception:
        pass
    return info


# ebooklib's own messages, reworded for people.
_EPUB_PROBLEMS = {
    "Bad Zip file": "not a zip archive",
    "Large Zip file": "zip archive too large",
    "Can not find container file": "missing its OPF package file",  # ebooklib calls the OPF "container file"
    "Can not find ncx file.": "missing its NCX table of contents",
}


def _load_epub(file: Path, source: str) -> Loaded:
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
        raise DocumentError(source, f"corrupt EPUB ({_describe(exc)})") from exc

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
            text, _ = _html_text_and_title(_decode_markup(item.get_content()))
            if text.strip():
                chapters.append(text)
    except Exception as exc:
        raise DocumentError(source, f"corrupt EPUB ({_describe(exc)})") from exc
    if missing:
        names = ", ".join(repr(m) for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        if not chapters:
            raise DocumentError(source, f"corrupt EPUB (its reading order names {names}, missing from its manifest)")
        logger.warning("%s: its reading order names %s, missing from its manifest; read without them", source, names)

    metadata: dict[str, Any] = {"chapters": len(chapters)}
    for key, dc_name in (("title", "title"), ("author", "creator")):
        values = [_one_line(str(value)) for value, _attrs in book.get_metadata("DC", dc_name) if value]
        if values and values[0]:
            metadata[key] = ", ".join(v for v in values if v) if key == "author" else values[0]
    return "\n\n".join(chapters), metadata.get("title", ""), metadata


def _missing_member(exc: KeyError) -> str:
    # zipfile says "There is no item named 'META-INF/container.xml' in the archive".
    match = re.search(r"named '([^']+)'", str(exc.args[0]) if exc.args else "")
    return match.group(1) if match else "a file it names"


# -- the loader registry ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Builtin:
    """A loader of this module: it takes the source name too, so its errors name a URL or stdin, not a temp file."""

    read: Callable[[Path, str], Loaded]


def _extension(name: str) -> str:
    name = name.strip().lower()
    return name if name.startswith(".") else f".{name}"


LOADERS: plugins.Registry[Any] = plugins.Registry(plugins.LOADERS, normalize=_extension)
for _ext, _read in {".txt": _load_text, ".md": _load_markdown, ".markdown": _load_markdown, ".html": _load_html,
                    ".htm": _load_html, ".pdf": _load_pdf, ".epub": _load_epub}.items():
    LOADERS.register(_ext, _Builtin(_read))


def register_loader(extension: str, loader: Callable[[Path], "str | Document"]) -> None:
    """Read files ending in `extension` with `loader(path) -> str | Document` (the text, or a Document with its own
    title and metadata). Whatever it raises becomes a DocumentError naming the file."""
    LOADERS.register(extension, loader)


def supported_extensions() -> tuple[str, ...]:
    """The built-in extensions, then those that registered or installed loaders add (nothing is imported)."""
    return tuple(LOADERS.names())


def _read_with(loader: Any, extension: str, file: Path, source: str) -> Loaded:
    if isinstance(loader, _Builtin):
        return loader.read(file, source)
    try:
        loaded = loader(file)
    except DocumentError as exc:
        raise DocumentError(source, exc.reason) from exc
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure, reported with the file
        raise DocumentError(source, f"the {extension} loader failed ({_describe(exc)})") from exc
    if isinstance(loaded, Document):
        return loaded.text, loaded.title if loaded.title != "untitled" else "", dict(loaded.metadata)
    if isinstance(loaded, str):
        return loaded, "", {}
    raise DocumentError(source, f"the {extension} loader returned {type(loaded).__name__}, not text or a Document")


# -- standard input and URLs -------------------------------------------------------------------------------------------
def is_url(text: str) -> bool:
    head = text[:8].lower()
    return (head.startswith("http://") or head.startswith("https://")) and not any(c.isspace() for c in text)


def _sniff_extension(data: bytes) -> str:
    """The format of bytes that came without a file name: PDF, EPUB, HTML, else text (read as Markdown)."""
    if data.startswith(b"%PDF"):
        return ".pdf"
    if data.startswith(b"PK\x03\x04") and b"application/epub+zip" in data[:200]:
        return ".epub"
    head = data[:2048].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]:
        return ".html"
    return ".md"


def load_bytes(data: bytes, source: str, *, extension: str | None = None, name: str = "document",
               max_bytes: int = DEFAULT_MAX_BYTES, metadata: dict[str, Any] | None = None) -> Document:
    """A Document from bytes (stdin, a download): written to a temporary file so every loader, plugins' too,
    reads it the same way; errors and Document.source name `source`. `extension`: the format (default: sniffed);
    `name`: the title when the format gives none."""
    import tempfile

    if len(data) > max_bytes:
        raise DocumentError(source, f"too large: over the limit of {_size(max_bytes)}")
    extension = _extension(extension) if extension else _sniff_extension(data)
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


_CONTENT_TYPES = {
    "text/html": ".html", "application/xhtml+xml": ".html", "application/pdf": ".pdf",
    "application/epub+zip": ".epub", "text/markdown": ".md", "text/x-markdown": ".md", "text/plain": ".txt",
}


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
    extension = _CONTENT_TYPES.get(content_type) or (suffix if suffix in supported_extensions() else None)
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

    from ._version import __version__

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
                            raise DocumentError(url, f"cannot fetch: redirected to {_one_line(str(request.url))[:200]}:"
                                                     " only http and https are followed")
                        continue
                    if response.status_code >= 400:
                        raise DocumentError(url, f"cannot fetch: HTTP {response.status_code} "
                                                 f"{_one_line(response.reason_phrase)[:100]}".rstrip())
                    declared = response.headers.get("Content-Length", "")
                    if declared.isdigit() and not response.headers.get("Content-Encoding") and int(declared) > max_bytes:
                        raise DocumentError(url, f"too large: {_size(int(declared))}, over the limit of {_size(max_bytes)}")
                    pieces, size = [], 0
                    for piece in response.iter_bytes():
                        size += len(piece)
                        if size > max_bytes:
                            raise DocumentError(url, f"too large: over the limit of {_size(max_bytes)}")
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
                                 f"({_one_line(str(exc))[:200]})") from exc
    except Exception as exc:  # noqa: BLE001 - whatever else fails, it is this URL's failure, not the run's
        raise DocumentError(url, f"cannot fetch: {_describe(exc)[:300]}") from exc


def _connect_failure(exc: BaseException) -> str:
    import socket

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve (offline, or a wrong address)"
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect ({_one_line(str(exc)) or type(exc).__name__})"


def load_source(spec: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """What a command line names: `-` (standard input), an http(s) URL, or a file path."""
    if spec == STDIN:
        return read_stdin(max_bytes=max_bytes)
    if is_url(spec):
        return fetch_url(spec, max_bytes=max_bytes)
    return load_document(spec, max_bytes=max_bytes)


# -- text files: encoding and binary detection ------------------------------------------------------------------------
# Longest BOM first: the UTF-32 LE BOM begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
)
# C0 controls other than tab, newline, vertical tab, form feed and carriage return, plus DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_BINARY_SAMPLE_CHARS = 65536
_BINARY_CONTROL_RATIO = 0.1


def _decode(data: bytes, source: str, declared: str | None = None) -> tuple[str, str]:
    """The text and the name of its encoding.

    A BOM decides (and a file that contradicts its BOM is undecodable); else UTF-8; else the encoding an
    HTML file declares; else latin-1, which decodes any bytes, with an EncodingFallbackWarning.
    """
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError as exc:
                label = name.removesuffix("-sig").upper()
                raise DocumentError(source, f"undecodable: starts with a {label} byte order mark but is not "
                                            f"valid {label} ({exc.reason} at byte {exc.start})") from exc
            _reject_binary(text, source)
            return text, name
    if b"\x00" in data:
        utf16 = _utf16_without_bom(data)
        if utf16 is None:
            raise DocumentError(source, "binary file (contains NUL bytes), not text")
        _reject_binary(utf16[0], source)
        return utf16
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = _decode_declared(data, declared)
    _reject_binary(text, source)
    if encoding == "latin-1":
        warnings.warn(f"{source}: not valid UTF-8 and no byte order mark; decoded as latin-1, "
                      "so some characters may be wrong", EncodingFallbackWarning, stacklevel=4)
    return text, encoding


def _utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """UTF-16 text without a byte order mark, or None. Text in a Latin or Cyrillic script has a NUL in the high byte
    of most characters, so the NULs of a sample fall almost all at odd offsets (little-endian) or even ones (big-
    endian); binary data has them anywhere. The whole file must then decode, and `_reject_binary` still applies."""
    sample = data[:4096]
    if len(data) % 2 or len(sample) < 4:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    pairs = len(sample) // 2
    for codec, nuls, other in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if nuls >= pairs // 4 and other <= nuls // 50:
            try:
                return data.decode(codec), codec
            except UnicodeDecodeError:
                return None
    return None


def _decode_declared(data: bytes, declared: str | None) -> tuple[str, str]:
    if declared:
        try:
            name = codecs.lookup(declared).name
            if name not in ("utf-8", "latin-1", "iso8859-1"):
                return data.decode(name), name
        except (LookupError, UnicodeDecodeError):
            pass
    return data.decode("latin-1"), "latin-1"


def _reject_binary(text: str, source: str) -> None:
    sample = text[:_BINARY_SAMPLE_CHARS]
    controls = len(_CONTROL.findall(sample))
    if sample and controls / len(sample) > _BINARY_CONTROL_RATIO:
        raise DocumentError(source, f"binary file ({controls / len(sample):.0%} control characters), not text")


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_markup(data: bytes | str) -> str:
    """An EPUB chapter's XHTML as a str: a BOM or the XML declaration decides, UTF-8 is the EPUB default."""
    if isinstance(data, str):
        return data
    for bom, codec, _name in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace")
    from bs4.dammit import EncodingDetector

    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    for encoding in ([declared] if declared else []) + ["utf-8"]:
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


# -- markdown ---------------------------------------------------------------------------------------------------------
_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _markdown_title(text: str) -> str:
    """The first level-1 ATX heading ("# Title") outside fenced code blocks, or ""."""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := _ATX_H1.match(line)):
            return match.group(1).strip()
    return ""


# -- HTML -------------------------------------------------------------------------------------------------------------
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
        markup = _decode_markup(markup)
    return _html_text_and_title(markup)[0]


def _html_text_and_title(markup: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup  # imported here: the CLI lists files with this module before any is read

    soup = BeautifulSoup(markup, "html.parser")
    title_tag = soup.find("title")
    title = _one_line(title_tag.get_text()) if title_tag is not None else ""
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


# -- small helpers ----------------------------------------------------------------------------------------------------
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


def _missing(path: Path, otherwise: str) -> str:
    """Why a path that does not exist does not: a symbolic link that loops or points nowhere, else `otherwise`."""
    return link_problem(path) or otherwise


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _size(n: int) -> str:
    """A size people read ("1.5 MiB"), with the exact count for whoever compares it with ls."""
    scaled = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{n:,} bytes" if n < 1024 else f"{scaled:.1f} {unit} ({n:,} bytes)"


def _describe(exc: BaseException) -> str:
    message = _one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
