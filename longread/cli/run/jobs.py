"""What a command line names, as documents to read: files, every supported file below a folder, `-` and URLs."""

from __future__ import annotations

import os
import re
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import NamedTuple
from urllib.parse import unquote, urlparse

from ...documents import STDIN, STDIN_SOURCE, Document, find_documents, is_url, load_document, load_source
from ...documents import supported_extensions
from ...errors import DocumentError


@dataclass(frozen=True)
class Job:
    """One document: `spec` is what to load (a path, `-`, a URL); `relative` names its output files."""

    spec: str
    relative: PurePath
    path: Path | None = None  # the file, for files found on disk

    @property
    def name(self) -> str:
        return STDIN_SOURCE if self.spec == STDIN else self.spec

    def load(self) -> Document:
        if self.path is not None:
            return load_document(self.path)
        return load_source(self.spec)


class Failure(NamedTuple):
    name: str
    reason: str


def one_line(text: str) -> str:
    return " ".join(text.split())


def failure_of(name: str, exc: BaseException) -> Failure:
    if isinstance(exc, DocumentError) and exc.path == name:
        reason = exc.reason
    elif isinstance(exc, DocumentError) and Path(exc.path) == Path(name):
        reason = exc.reason
    elif isinstance(exc, OSError) and exc.strerror:
        reason = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        reason = str(exc) or type(exc).__name__
    return Failure(name, one_line(reason))


def relative_name(file: Path, root: Path) -> PurePath:
    """file's path below root; its own name when root is the file, or when no common base can be found."""
    if file == root or not root.is_dir():
        return PurePath(file.name)
    for f, r in ((file, root), (Path(os.path.abspath(file)), Path(os.path.abspath(root)))):
        with suppress(ValueError):
            return f.relative_to(r)
    with suppress(ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
        return file.resolve().relative_to(root.resolve())
    return PurePath(file.name)


def url_name(url: str) -> PurePath:
    """The output name of a URL: its host and path (`example.org/books/moby.html`); a query adds a hash of itself
    to the last part (`example.org/page-q1a2b3c4d`), so pages that differ only in their query get their own files.
    Control characters (a `%00` in the path) become `_`: they cannot be in a file name."""
    import hashlib

    parsed = urlparse(url)
    parts = [parsed.hostname or "url", *[p for p in unquote(parsed.path).split("/") if p not in ("", ".", "..")]]
    parts = [_CONTROL.sub("_", part) for part in parts]
    if parsed.query:
        parts[-1] += f"-q{hashlib.sha256(parsed.query.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return PurePath(*parts)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def collect_jobs(specs: list[str], *, exclude: Path | None = None) -> tuple[list[Job], list[Failure]]:
    """Every document the specs name, each once; a spec that cannot be read fails alone.

    `exclude` (the --out folder) keeps our own summaries out of a run over a folder that contains it.
    """
    jobs: list[Job] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    excluded = Path(os.path.realpath(exclude)) if exclude is not None else None  # never raises, loops too
    for spec in specs:
        if spec == STDIN:
            if STDIN not in seen:
                seen.add(STDIN)
                jobs.append(Job(STDIN, PurePath("stdin")))
            continue
        if is_url(spec):
            if spec not in seen:
                seen.add(spec)
                jobs.append(Job(spec, url_name(spec)))
            continue
        root = Path(spec)
        try:
            files = find_documents(root, on_error=lambda folder, reason: failures.append(Failure(str(folder), reason)))
        except DocumentError as exc:
            failures.append(failure_of(spec, exc))
            continue
        if not files:
            kinds = " ".join(supported_extensions())
            failures.append(Failure(spec, f"no supported documents here ({kinds})"))
            continue
        for file in files:
            real = os.path.realpath(file)
            if excluded is not None and root.is_dir() and Path(real).is_relative_to(excluded):
                continue
            if real in seen:
                continue
            seen.add(real)
            jobs.append(Job(str(file), relative_name(file, root), file))
    return jobs, failures
