"""Rich helpers shared by the commands: the progress display, notes and the table of failed files (all on stderr).

Results go to stdout; everything a person watches while a run goes on goes to stderr, so `longread ... --json`
can be piped without the progress display getting in the way.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .results import ChainEvent


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def note(console: Console, message: str, style: str | None = None) -> None:
    """Prints a line as it is: file names such as `[draft].txt` must not be read as rich markup."""
    console.print(Text(message, style=style or ""), soft_wrap=True)


@dataclass
class DocumentTally:
    """Running totals of the document being read, for tokens/s."""

    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    calls: int = 0

    def tokens_per_second(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0


class RunProgress:
    """Documents done/total, then the current document's segment i/n with tokens/s and an ETA.

    The display shows only on a terminal (and not with --quiet); the tally runs either way, so the same code
    path serves logs and tests.
    """

    def __init__(self, console: Console, documents: int, *, enabled: bool = True):
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}", markup=False),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            # Results print to stdout while the display runs. Only when stdout is the same kind of terminal do we
            # route it through the display (so lines land above the bars); a piped stdout must stay untouched.
            redirect_stdout=sys.stdout.isatty(),
            # Transient: when the run ends, the bars make way for the per-document lines and the error table.
            transient=True,
        )
        self.documents = self.progress.add_task("documents", total=documents, rate="")
        self.segments = self.progress.add_task("", total=None, visible=False, rate="")
        self.tally = DocumentTally()
        self._name = ""
        self._seen_first_event = False

    def __enter__(self) -> "RunProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def start_document(self, name: str) -> None:
        self._name = name
        self.tally = DocumentTally()
        self._seen_first_event = False
        self.progress.reset(self.segments, total=None, visible=True, description=f"{name}: reading", rate="")

    def on_event(self, event: ChainEvent) -> None:
        record = event.record
        if record is None:  # a call starting: the display moves when it finishes
            return
        self.tally.tokens += record.prompt_tokens + record.completion_tokens
        self.tally.calls += 1
        rate = f"{self.tally.tokens_per_second():,.0f} tok/s"
        if event.agent == "manager":
            self.progress.update(
                self.segments, completed=event.segments, description=f"{self._name}: writing", rate=rate
            )
            return
        done = (event.segment or 0) + 1
        if not self._seen_first_event:
            # A resumed run starts part-way through: reset so the ETA is not computed from a jump of k segments.
            self._seen_first_event = True
            self.progress.reset(self.segments, total=event.segments, completed=done - 1, rate=rate)
        self.progress.update(
            self.segments,
            total=event.segments,
            completed=done,
            description=f"{self._name}: segment {done}/{event.segments}",
            rate=rate,
        )

    def finish_document(self) -> None:
        self.progress.advance(self.documents)
        self.progress.update(self.segments, visible=False)

    def print(self, message: str, style: str | None = None) -> None:
        """A line above the live display (or plainly, when there is none)."""
        note(self.progress.console, message, style)


def failures_table(failures: list[tuple[str, str]], total: int) -> Table:
    table = Table(title=f"{len(failures)} of {total} document(s) failed", title_justify="left", show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("error", overflow="fold")
    for name, reason in failures:
        table.add_row(Text(name), Text(reason))
    return table
