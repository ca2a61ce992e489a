"""Summary files under --out: where each document's go, how they are written, and whether they are up to date.

A finished document has DIR/<relative path>.summary.md and .summary.json. The JSON records the settings the
summary was made with (model, window, strategy, kv, and a fingerprint of the prompts); a rerun with other settings
redoes the document (and says why), a rerun with the same ones skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ..errors import DocumentError
from .jobs import Job, one_line


def write_atomic(target: Path, text: str) -> None:
    """A temporary file in the same folder, then os.replace: readers see the old file or the new one, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".longread-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
        from ..agents.prompts import DEFAULT_PROMPTS

        prompts = DEFAULT_PROMPTS
    return hashlib.sha256(repr(prompts).encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class SummaryFiles:
    markdown: Path
    json: Path

    def finished(self) -> bool:
        return self.markdown.is_file() and self.json.is_file()

    def stored(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.json.read_text(encoding="utf-8", errors="surrogateescape"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write(self, markdown: str, data: dict[str, Any]) -> None:
        # Markdown first, JSON last: a run killed in between leaves the document unfinished, so it is redone.
        write_atomic(self.markdown, markdown)
        write_atomic(self.json, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


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

    def files_for(self, job: Job) -> SummaryFiles:
        inside = self.root.resolve()
        # `..`, `.` and anchors cannot come from a walk below a folder; dropping them makes sure of it.
        parts = [p for p in job.relative.parts if p not in ("", ".", "..") and not PurePath(p).anchor]
        if not parts:
            raise DocumentError(job.name, "no usable name for its summary files")
        base = self.root.joinpath(*parts)
        files = SummaryFiles(base.with_name(base.name + ".summary.md"), base.with_name(base.name + ".summary.json"))
        for target in (files.markdown, files.json):
            # resolve() follows symlinks already in DIR (a folder or a file linking out), so they are caught too.
            if not target.resolve().is_relative_to(inside):
                raise DocumentError(job.name, f"its summary file {target} would be outside {self.root}")
        key = str(files.markdown.resolve())
        owner = self.claimed.setdefault(key, job.name)
        if owner != job.name:
            raise DocumentError(
                job.name, f"its summary file {files.markdown} is also {owner}'s; summarize them into different --out folders"
            )
        return files
