"""The one display design of every command: results on stdout, a live progress display and notes on stderr.

- Results go to stdout, and only while the live display is stopped (`Display.paused`): on a terminal the display
  makes way (its lines are cleared, nothing else is), the result is written, the display comes back below it.
  So no answer starts on a bar's line, and no line of output is ever erased.
- The live display shows only when stderr is a terminal (and not with --quiet). A pipe gets no control codes:
  stdout never does, and a piped stderr gets plain lines (`skipped ...`, `done ...`, errors).
- It serves N documents in flight: one overall line (documents done, failed, skipped, elapsed time) and one
  line per document being read: its name, `segment k/n` as each call starts, the phase (reading, writing the
  answer, judging, ...), tokens/s, and an ETA from the seconds per segment measured in this run. A resumed run
  says `resuming at k/n`.
- `TextStream` writes the final answer to stdout as the model writes it.
- Nothing from outside (a file name, a URL, a model's text) reaches the terminal raw: `printable` escapes control
  characters (CSI colours, OSC titles, newlines in a name), bidirectional overrides and undecodable bytes.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

PHASES = {
    "worker": "reading",
    "reader": "reading",
    "manager": "writing the answer",
    "judge": "judging",
    "controller": "recalling memory",
    "formatter": "writing the JSON",
}


# C0 and C1 controls and DEL (ESC starts CSI and OSC sequences; U+009B is an 8-bit CSI), the bidirectional
# embeddings, overrides and isolates (text that reads in another order than it is stored), and lone surrogates
# (the bytes of a file name that is not UTF-8, as Python's surrogateescape keeps them).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNPRINTABLE_ABOVE_ASCII = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, *, keep: str = "") -> str:
    """`text` safe for a terminal: each unprintable character as a visible escape (`\\x1b`, `\\n`, `\\u202e`; an
    undecodable byte of a file name as `\\xff`); the characters in `keep` (say "\\n\\t" for an answer) stay."""
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in keep:
            return char
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte itself
            return f"\\x{code - 0xDC00:02x}"
        return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")

    return _UNPRINTABLE.sub(escape, text)


def json_line(data: Any, indent: int | None = None) -> str:
    """JSON that is safe on a terminal and always valid UTF-8: json escapes C0 controls itself; C1 controls,
    bidirectional controls and lone surrogates are escaped here too (the same JSON once parsed)."""
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    return _UNPRINTABLE_ABOVE_ASCII.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def note(console: Console, message: str, style: str | None = None) -> None:
    """Prints one line: never read as rich markup (`[draft].txt`), control characters escaped (`printable`)."""
    console.print(Text(printable(message), style=style or ""), soft_wrap=True)


NAME_WIDTH = 40  # a document's name on its progress line: the rest of the line says where the reading is


def shortened(name: str, width: int) -> str:
    """A long path keeps its end (the file's name): `…ks/vol2/moby.txt`."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class DocumentTally:
    """What one document's reading has measured so far: for tokens/s and the ETA. Everything shown is computed when
    the display draws (every second at least), so clocks and the ETA tick between calls too."""

    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    calls: int = 0
    call_seconds: float = 0.0  # wall time of the finished calls: tokens / call_seconds is the measured rate
    segments: int | None = None
    segments_done: int = 0
    first_segment: int | None = None  # where this run started: > 0 when it resumed
    segment_seconds: list[float] = field(default_factory=list)  # wall time of each worker call, measured here
    call_started: float | None = None
    call_agent: str | None = None

    def tokens_per_second(self) -> float:
        """Tokens (prompt + completion) per second of model time, over the finished calls."""
        return self.tokens / self.call_seconds if self.call_seconds > 0 else 0.0

    def seconds_per_segment(self) -> float | None:
        return sum(self.segment_seconds) / len(self.segment_seconds) if self.segment_seconds else None

    def running(self) -> float:
        """Seconds the call under way has run (0 between calls)."""
        return time.monotonic() - self.call_started if self.call_started is not None else 0.0

    def eta(self) -> float | None:
        """Seconds left: the remaining segments, plus the final call, at the measured seconds per segment, less the
        time the call under way has already run (a call that runs past its share leaves the ETA at 0)."""
        per = self.seconds_per_segment()
        if per is None or self.segments is None:
            return None
        left = max(self.segments - self.segments_done, 0) + 1  # + the final call, about one segment's time
        return max(left * per - self.running(), 0.0)


class DocumentProgress:
    """The line of one document in flight; `on_event` takes the strategies' call events."""

    def __init__(self, display: "Display", name: str, task: TaskID | None, mode: str = "query"):
        self.display = display
        self.name = shortened(printable(name), NAME_WIDTH)
        self.task = task
        self.mode = mode
        self.tally = DocumentTally()
        self.phase = "loading"
        self.position = ""
        self._lock = threading.Lock()

    # -- events ----------------------------------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        """An event with `kind` ("call_started" / "call_finished" / "routed"), `agent`, `segment`, `segments`,
        `path`, `record` (None at call start), `message` (routed); events without `kind` are finished calls."""
        kind = getattr(event, "kind", "call_finished")
        agent = getattr(event, "agent", "worker")
        segment = getattr(event, "segment", None)
        segments = getattr(event, "segments", None)
        path = getattr(event, "path", None)
        if kind == "routed":  # until the next call starts, the phase says which way `auto` went
            with self._lock:
                self.phase, self.position = printable(getattr(event, "message", "") or ""), ""
            self.refresh(now=True)
            self.display.plain_line(self, force=True)
            return
        with self._lock:
            tally = self.tally
            if segments and agent in ("worker", "manager"):  # a reader's `segments` are retrieval chunks
                tally.segments = segments
            if kind == "call_started":
                tally.call_started, tally.call_agent = time.monotonic(), agent
                self.phase = self._phase(agent)
                if agent == "worker" and segment is not None and segments:
                    if tally.first_segment is None:
                        tally.first_segment = segment
                        tally.segments_done = max(tally.segments_done, segment)
                    resumed = tally.first_segment > 0 and tally.segments_done == tally.first_segment
                    where = f"resuming at {segment + 1}/{segments}" if resumed else f"segment {segment + 1}/{segments}"
                    self.position = where + (f", path {path + 1}" if isinstance(path, int) else "")
                elif agent != "worker":
                    self.position = ""
            else:
                record = getattr(event, "record", None)
                ran = tally.running() if tally.call_started is not None else None
                if record is not None:
                    tally.tokens += record.prompt_tokens + record.completion_tokens
                    tally.calls += 1
                    tally.call_seconds += ran if ran is not None else record.seconds
                if agent == "worker" and segment is not None:
                    if tally.first_segment is None:  # no start event came (an older strategy)
                        tally.first_segment = segment
                    if ran is not None:
                        tally.segment_seconds.append(ran)
                    elif record is not None:
                        tally.segment_seconds.append(record.seconds)
                    tally.segments_done = max(tally.segments_done, segment + 1)
                    if segments and tally.segments_done >= segments:
                        self.phase, self.position = self._phase("manager"), ""
                tally.call_started, tally.call_agent = None, None
        self.refresh()
        if kind == "call_started":
            self.display.plain_line(self)

    def _phase(self, agent: str) -> str:
        if agent == "manager" and self.mode == "summary":
            return "writing the summary"
        return PHASES.get(agent, agent)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.refresh()

    # -- the line --------------------------------------------------------------------------------------------------
    def description(self) -> str:
        parts = [self.name, self.position, self.phase]
        return "  ".join(p for p in parts if p)

    def stats(self) -> str:
        """tokens/s and the ETA (or, for a call that reads no segments, how long it has run): computed when drawn."""
        with self._lock:
            tally = self.tally
            parts = []
            if tally.tokens:
                parts.append(f"{tally.tokens_per_second():,.0f} tok/s")
            if tally.call_started is not None and tally.call_agent not in ("worker", "manager"):
                # One call over chosen text (retrieval, a judge, memory): no segments to time it by.
                parts.append(f"call {clock(tally.running())}")
                return "  ".join(parts)
            eta = tally.eta()
            if eta is not None:
                parts.append(f"ETA {clock(eta)}")
            elif tally.segments and tally.call_agent == "worker":
                parts.append("ETA after the first segment")
            return "  ".join(parts)

    def refresh(self, now: bool = False) -> None:
        """Updates the line; `now` draws it at once (a message that may last less than the display's beat)."""
        if self.task is None:
            return
        total = self.tally.segments
        self.display.update(
            self.task, description=self.description(), total=total,
            completed=min(self.tally.segments_done, total) if total else 0, refresh=now,
        )


class StatsColumn(ProgressColumn):
    """The right-hand text of a line, computed each time the display draws (rich redraws several times a second),
    so elapsed times and ETAs tick between events."""

    def render(self, task: Task) -> Text:
        stats = task.fields.get("stats")
        return Text(stats() if callable(stats) else str(stats or ""))


class Display:
    """The live display of a run on stderr (see the module docstring); a no-op display where it cannot show.

    `plain`: stderr is a terminal but stdout is not (`| tee`, `--json | jq`, `> file`): stdout's text may land on
    the same screen without passing through us, so no live display (it would be drawn over); plain progress lines
    on stderr instead, one when a document starts a phase, at most every PLAIN_EVERY seconds each."""

    PLAIN_EVERY = 10.0

    def __init__(self, console: Console, documents: int, *, enabled: bool = True, stdout: IO[str] | None = None):
        self.console = console
        self._stdout = stdout
        terminal = enabled and console.is_terminal
        self.live = terminal and self._stdout_is_terminal()
        self.plain = terminal and not self.live
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=24),
            StatsColumn(),
            console=console,
            disable=not self.live,
            redirect_stdout=False,  # stdout is written only while the display is stopped (`paused`)
            transient=True,  # stopping clears the display's own lines, never output
        )
        self.total = documents
        self.done = self.failed = self.skipped = 0
        self.started = time.monotonic()
        self.overall = self.progress.add_task("", total=max(documents, 1), stats=self._elapsed, visible=documents > 1)
        self._running = False
        self._pauses = 0
        self._stopped_for_output = False
        self._plain_at: dict[int, float] = {}
        self._lock = threading.RLock()
        self._update_overall()

    @property
    def stdout(self) -> IO[str]:
        return self._stdout or sys.stdout

    def __enter__(self) -> "Display":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        with self._lock:
            if self.live and not self._running:
                # A fresh Live each time: a stopped one keeps the height it last drew and, started again, moves up
                # and erases that many lines, which by then are output (the summary paths of a folder run, or the
                # whole screen above a --jobs display). A new Live starts from the cursor, erasing nothing.
                self.progress.live = Live(console=self.console, auto_refresh=True, refresh_per_second=4,
                                          transient=True, redirect_stdout=False, redirect_stderr=True,
                                          get_renderable=self.progress.get_renderable)
                self.progress.start()
                self._running = True

    def stop(self) -> None:
        with self._lock:
            if self._running:
                self.progress.stop()
                self._running = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stdout may be written inside: on a terminal the display steps aside and comes back below."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def pause(self) -> None:
        # A count, not a lock held across the pause: a stream's chunks and its end may come from other threads.
        with self._lock:
            self._pauses += 1
            if self._pauses == 1 and self._running:
                self.stop()
                self._stopped_for_output = True

    def resume(self) -> None:
        with self._lock:
            self._pauses = max(self._pauses - 1, 0)
            try:
                self.stdout.flush()
            except (OSError, ValueError):
                pass
            if self._pauses == 0 and self._stopped_for_output:
                self._stopped_for_output = False
                self.start()

    def _stdout_is_terminal(self) -> bool:
        try:
            return self.stdout.isatty()
        except (AttributeError, ValueError):
            return False

    def update(self, task: TaskID, **fields: Any) -> None:
        with self._lock:
            if task in self.progress.task_ids:
                self.progress.update(task, **fields)

    # -- documents -------------------------------------------------------------------------------------------------
    def document(self, name: str, mode: str = "query") -> DocumentProgress:
        line = DocumentProgress(self, name, None, mode)
        if self.live:
            with self._lock:
                line.task = self.progress.add_task(printable(name), total=None, stats=line.stats)
        line.refresh()
        return line

    def retire(self, line: DocumentProgress | None) -> None:
        """A document's reading is over: its line leaves the display now (it is counted when it is reported, in
        the documents' order: a finished --jobs document no longer sits there saying "writing the summary")."""
        with self._lock:
            if line is not None and line.task is not None:
                self.progress.remove_task(line.task)
                line.task = None

    def drop(self, line: DocumentProgress | None) -> None:
        """Removes a document's line without counting it (a document put off to the end of the run)."""
        self.retire(line)

    def finish(self, line: DocumentProgress | None, outcome: str) -> None:
        """outcome: done | failed | skipped."""
        with self._lock:
            if outcome == "failed":
                self.failed += 1
            elif outcome == "skipped":
                self.skipped += 1
            else:
                self.done += 1
            self.retire(line)
            self._update_overall()

    def _elapsed(self) -> str:
        return f"elapsed {clock(time.monotonic() - self.started)}"

    def _update_overall(self) -> None:
        finished = self.done + self.failed + self.skipped
        parts = [f"{finished}/{self.total} documents"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        self.progress.update(self.overall, completed=finished, description=", ".join(parts))

    def plain_line(self, line: DocumentProgress, force: bool = False) -> None:
        """Without a live display but with a person watching stderr: a progress line now and then."""
        if not self.plain:
            return
        now = time.monotonic()
        with self._lock:
            last = self._plain_at.get(id(line))
            if last is not None and now - last < self.PLAIN_EVERY and not force:
                return
            self._plain_at[id(line)] = now
        stats = line.stats()
        self.note(line.description() + (f"  {stats}" if stats else ""), "dim")

    def note(self, message: str, style: str | None = None) -> None:
        """A line on stderr, above the live display while it runs."""
        note(self.console, message, style)


class TextStream:
    """Writes the final answer to stdout as the model writes it (`on_text` chunks), the display paused meanwhile.

    `before` runs once, just before the first chunk (a document's heading). Leading whitespace is dropped, so the
    text starts where a printed answer would; `close` ends the line and lets the display come back.
    """

    def __init__(self, display: Display, before: Callable[[], None] | None = None):
        self.display = display
        self.before = before
        self.started = False
        self.text = ""
        self._lock = threading.Lock()

    def __call__(self, chunk: str) -> None:
        with self._lock:
            if not self.started:
                chunk = chunk.lstrip()
                if not chunk:
                    return
                self.started = True
                self.display.pause()
                if self.before:
                    self.before()
            self.text += chunk
            self.display.stdout.write(printable(chunk, keep="\n\t"))
            self.display.stdout.flush()

    def close(self) -> None:
        """Ends the streamed text with a newline; the caller prints the rest, then calls `resume`."""
        with self._lock:
            if self.started and not self.text.endswith("\n"):
                self.display.stdout.write("\n")
            self.display.stdout.flush()

    def resume(self) -> None:
        with self._lock:
            if self.started:
                self.started = False
                self.display.resume()


def failures_table(failures: list[tuple[str, str]], total: int) -> Table:
    table = Table(title=f"{len(failures)} of {total} document(s) failed", title_justify="left", show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("error", overflow="fold")
    for name, reason in failures:
        table.add_row(Text(printable(name)), Text(printable(reason)))
    return table
