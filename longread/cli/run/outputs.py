"""Summary files under --out: where each document's go, how they are written, and whether they are up to date.

A finished document has DIR/<relative path>.summary.md and .summary.json. The JSON records the settings the
summary was made with (model, window, strategy, kv, and a fingerprint of the prompts); a rerun with other settings
redoes the document (and says why), a rerun with the same ones skips it.

The two files are one write: the Markdown is written first, the JSON last, and both carry the same write id (a
comment at the end of the Markdown). A pair whose ids differ (a run killed between the two writes of a redo with
other settings) is not finished, so it is redone; its checkpoint is kept, so that costs no model call.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import secrets
import tempfile
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ..display.console import json_line
from ...errors import DocumentError, LongreadError
from .jobs import Job, one_line


class OutputError(LongreadError):
    """A summary file that cannot be written; the message names the file, never a temporary one."""

    def __init__(self, target: Path, exc: OSError):
        super().__init__(f"cannot write {target}: {exc.strerror or exc}")
        self.target = target


def _new_file_mode() -> int:
    """What open() would give a new file: 0o666 less the umask (mkstemp makes its files 0600, whatever the umask)."""
    try:  # Linux says without changing it
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)  # elsewhere the only way to read it is to set it (to the strict side) and set it back
    os.umask(umask)
    return 0o666 & ~umask


def _temporary_prefix(target: Path) -> str:
    # The target's name hashed (a long name plus a suffix could pass the file system's limit), and our pid, so a
    # later write of the same file can tell the leftovers of a killed process from a live one's file.
    return f".longread-{hashlib.sha256(target.name.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}-"


def _remove_leftovers(target: Path) -> None:
    """Deletes what a process killed while writing `target` left behind (its `.longread-*.tmp`)."""
    prefix = _temporary_prefix(target)
    with suppress(OSError):
        for leftover in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
            pid = leftover.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with suppress(OSError):
                    leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def write_atomic(target: Path, text: str) -> None:
    """A temporary file in the same folder, then os.replace: readers see the old file or the new one, never half.

    The new file gets the mode a plainly created one would (the umask's, or the old file's); any failure is an
    OutputError naming `target`, and removes the temporary file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(target)
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = _new_file_mode()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{_temporary_prefix(target)}{os.getpid()}-",
                                   suffix=".tmp")
    except OSError as exc:
        raise OutputError(target, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(target, exc) from exc
        raise


def check_writable(folder: Path) -> None:
    """Raises OutputError naming `folder` unless it can be written, or created and then written: its nearest
    existing ancestor (the folder itself, if it exists) must be a folder in which a file can be made (a probe file
    is made there and removed). Nothing is created: a run that writes nothing leaves nothing behind, and runs (or
    threads of one run) that check the same folder at once cannot remove it under one another."""
    from ...documents import link_problem

    existing = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), Path("."))
    try:
        problem = link_problem(existing)
        if problem is not None:
            raise OSError(errno.ELOOP, f"{existing} is {problem}" if existing != folder else problem)
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".longread-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(folder, exc) from exc


@dataclass(frozen=True)
class OutputSettings:
    """What a summary depends on besides the document: a rerun with other values redoes it."""

    model: str
    window: int | None  # as asked; None: the model's default
    strategy: str
    kv: str | None
    prompts: str  # fingerprint of the prompts

    @property
    def fingerprint(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fingerprint": self.fingerprint}

    def differences(self, stored: dict[str, Any] | None) -> list[str]:
        """What changed since the stored settings, as `model local -> mock`; [] when they match."""
        if not isinstance(stored, dict):
            return ["made before settings were recorded"]
        if stored.get("fingerprint") == self.fingerprint:
            return []
        changes = []
        for key, value in asdict(self).items():
            before = stored.get(key)
            if before != value:
                changes.append("prompts changed" if key == "prompts" else f"{key} {before} -> {value}")
        return changes or ["settings changed"]


def prompts_fingerprint(prompts: Any = None) -> str:
    if prompts is None:
        from ...agents.prompts import DEFAULT_PROMPTS

        prompts = DEFAULT_PROMPTS
    return hashlib.sha256(repr(prompts).encode("utf-8", "surrogatepass")).hexdigest()[:12]


WRITE_ID = re.compile(r"<!-- longread write (\w+) -->\s*\Z")


@dataclass(frozen=True)
class SummaryFiles:
    markdown: Path
    json: Path
    locks: Path | None = None  # where the lock of these files goes (the --out folder)

    def lock(self) -> Any:
        """The lock of these files, shared by every run that writes them whatever its workspace: a WorkLock with no
        checkpoint threads, a hidden file in the --out folder while it is held (none is left after a run)."""
        from .workspace import WorkLock

        if self.locks is None:
            return None
        key = hashlib.sha256(str(self.markdown.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return WorkLock(self.locks, f".longread-{key}", [])

    def finished(self) -> bool:
        return self.markdown.is_file() and self.json.is_file()

    def stored(self) -> dict[str, Any] | None:
        """The JSON of a finished pair; None when there is none, or the Markdown is not the one it was written with."""
        try:
            data = json.loads(self.json.read_text(encoding="utf-8", errors="surrogateescape"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        write_id = data.get("write_id")
        if write_id is not None:  # summaries written before write ids are taken as they are
            try:
                match = WRITE_ID.search(self.markdown.read_text(encoding="utf-8", errors="surrogateescape")[-200:])
            except OSError:
                return None
            if match is None or match.group(1) != write_id:
                return None
        return data

    def prepare(self) -> None:
        """Checks, before any call, that the summary's folder can be written (OutputError otherwise)."""
        check_writable(self.markdown.parent)

    def write(self, markdown: str, data: dict[str, Any]) -> None:
        # Markdown first, JSON last: a run killed in between leaves the document unfinished, so it is redone.
        write_id = secrets.token_hex(8)
        write_atomic(self.markdown, f"{markdown}<!-- longread write {write_id} -->\n")
        write_atomic(self.json, json_line({**data, "write_id": write_id}, indent=2) + "\n")  # valid UTF-8, always


def cut_note(data: dict[str, Any]) -> str | None:
    """The mark of a text its final call's token cap cut short, or None."""
    finish = data.get("finish_reason")
    calls = data.get("calls") or []
    final = calls[-1] if calls else None
    if finish is None and final is not None and final.get("completion_tokens", 0) >= final.get("max_new_tokens", 1):
        finish = "length"  # results that predate finish_reason: a call that filled its cap was cut by it
    if finish != "length":
        return None
    cap = final.get("max_new_tokens") if final else None
    return f"[cut: the text reached its cap of {cap} tokens]" if cap else "[cut: the text reached its token cap]"


def summary_markdown(data: dict[str, Any]) -> str:
    title = one_line(str(data.get("title") or "")) or "Summary"
    calls = len(data.get("calls") or [])
    segments = data.get("segments", 0)
    footer = (
        f"_Written by longread with {data.get('model')}"
        + (f" ({data['strategy']})" if data.get("strategy") else "")
        + f": {segments} segment{'s' * (segments != 1)}, {calls} call{'s' * (calls != 1)}, window {data.get('window')}._"
    )
    body = str(data.get("summary") or "").strip()
    mark = cut_note(data)
    if mark:
        body += f"\n\n_{mark}_"
    return f"# {title}\n\n{body}\n\n---\n{footer}\n"


@dataclass
class OutputFolder:
    """Maps each document to DIR/<path relative to its input>.summary.{md,json}, never outside DIR."""

    root: Path
    claimed: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """DIR can be created and written: checked before the first call (OutputError otherwise)."""
        check_writable(self.root)

    def files_for(self, job: Job) -> SummaryFiles:
        inside = Path(os.path.realpath(self.root))  # realpath: a link loop as DIR raises nothing here
        # `..`, `.` and anchors cannot come from a walk below a folder; dropping them makes sure of it.
        parts = [p for p in job.relative.parts if p not in ("", ".", "..") and not PurePath(p).anchor]
        if not parts:
            raise DocumentError(job.name, "no usable name for its summary files")
        base = self.root.joinpath(*parts)
        files = SummaryFiles(base.with_name(base.name + ".summary.md"), base.with_name(base.name + ".summary.json"),
                             self.root)
        for target in (files.markdown, files.json):
            # resolve() follows symlinks already in DIR (a folder or a file linking out), so they are caught too.
            try:
                resolved = target.resolve()
            except (OSError, RuntimeError) as exc:  # Python 3.11 raises RuntimeError for a symlink loop
                raise DocumentError(job.name, f"its summary file {target} cannot be resolved (a symbolic link "
                                              f"loop?): {exc}") from exc
            if not resolved.is_relative_to(inside):
                raise DocumentError(job.name, f"its summary file {target} would be outside {self.root}")
        key = str(files.markdown.resolve())
        owner = self.claimed.setdefault(key, job.name)
        if owner != job.name:
            raise DocumentError(
                job.name, f"its summary file {files.markdown} is also {owner}'s; summarize them into different --out folders"
            )
        return files
