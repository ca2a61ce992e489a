"""Files to Documents: the files below a folder, and one file read by the loader of its extension, with every
failure a DocumentError that names the file and says why (so a folder run can report it and go on)."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

from .. import plugins
from ..errors import DocumentError
from .base import (DEFAULT_MAX_BYTES, Document, Format, Loaded, describe, human_size, missing, normalize_newlines,
                   one_line)
from .registry import LOADERS, supported_extensions

logger = logging.getLogger(__name__)


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
        raise DocumentError(path, missing(root, "no such file or folder"))
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
            raise DocumentError(source, missing(file, "no such file"))
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
                source, f"too large: {human_size(size)}, over the limit of {human_size(max_bytes)} (pass max_bytes to raise it)")
        if size == 0:
            raise DocumentError(source, "empty file (0 bytes)")
        if not isinstance(loader, Format) or loader.archive:  # a plugin's format may be a zip archive too
            check_archive(file, source, max_bytes)
        text, title, metadata = read_with(loader, extension, file, source)
    except plugins.PluginError as exc:
        raise DocumentError(source, str(exc)) from exc
    except OSError as exc:  # permission denied, a file removed while we read it, ...
        raise DocumentError(source, f"cannot read: {exc.strerror or exc}") from exc
    text = normalize_newlines(text)
    if not text.strip():
        raise DocumentError(source, "no extractable text (only whitespace or markup)")
    metadata = {"format": extension.lstrip("."), "bytes": size, **metadata}
    return Document(text=text, source=source, title=one_line(title) or file.stem, metadata=metadata)


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
        raise DocumentError(source, f"unsafe archive: it would inflate to {human_size(total)}, over the limit of "
                                    f"{human_size(max_bytes)} (pass max_bytes to raise it)")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > _ZIP_RATIO_FLOOR and ratio > MAX_ZIP_RATIO:
            raise DocumentError(source, f"unsafe archive: {one_line(member.filename)[:80]} would inflate to "
                                        f"{human_size(member.file_size)} from {human_size(member.compress_size)} "
                                        f"({ratio:,.0f}:1, more than {MAX_ZIP_RATIO}:1 is refused as a zip bomb)")


def read_with(loader: Any, extension: str, file: Path, source: str) -> Loaded:
    if isinstance(loader, Format):
        return loader.read(file, source)
    try:
        loaded = loader(file)
    except DocumentError as exc:
        raise DocumentError(source, exc.reason) from exc
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure, reported with the file
        raise DocumentError(source, f"the {extension} loader failed ({describe(exc)})") from exc
    if isinstance(loaded, Document):
        return loaded.text, loaded.title if loaded.title != "untitled" else "", dict(loaded.metadata)
    if isinstance(loaded, str):
        return loaded, "", {}
    raise DocumentError(source, f"the {extension} loader returned {type(loaded).__name__}, not text or a Document")
