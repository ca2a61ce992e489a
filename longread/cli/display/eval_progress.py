"""The progress of an eval on stderr: a rich bar with the mean score so far and an ETA on a terminal, one line per
finished case otherwise (a run in the background writes a readable log)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from ...eval.record import EvalRecord


class EvalProgress:
    def __init__(self, total: int, *, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True, highlight=False)
        self.total = total
        self.done = 0
        self.scores: list[float] = []
        self.errors = 0
        self.started = time.monotonic()
        self.live = enabled and self.console.is_terminal
        self.lines = enabled and not self.live
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[score]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.task = self.progress.add_task("eval", total=total, score="")

    def __enter__(self) -> "EvalProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def print(self, message: str, style: str | None = None) -> None:
        if self.live or self.lines:
            self.progress.console.print(Text(message, style=style or ""), soft_wrap=True)

    def set_total(self, total: int) -> None:
        """The cases this run will read (those already in the results file left out), for the bar and the ETA."""
        self.total = total
        self.progress.update(self.task, total=total)

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def finished(self, record: EvalRecord) -> None:
        self.done += 1
        if record.failed:
            self.errors += 1
        elif record.score is not None:
            self.scores.append(float(record.score))
        mean = f"mean {sum(self.scores) / len(self.scores):.3f}" if self.scores else ""
        errors = f", {self.errors} failed" if self.errors else ""
        self.progress.update(self.task, advance=1, score=mean + errors)
        if self.lines:
            outcome = f"error {record.error}" if record.failed else f"score {record.score or 0:.3f}"
            self.console.print(
                Text(f"[{self.done}/{self.total}] {record.case} {record.strategy} {record.model} "
                     f"w{record.window}{' kv ' + record.kv if record.kv else ''}: {outcome} "
                     f"({record.seconds:.1f} s){self._eta()}"),
                soft_wrap=True,
            )

    def _eta(self) -> str:
        if not self.done or self.done >= self.total:
            return ""
        left = (time.monotonic() - self.started) / self.done * (self.total - self.done)
        return f", eta {_duration(left)}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
