"""How results are written to stdout: text (the answer, a cut mark, citations, usage), JSON lines, dry-run estimates.

Everything here writes inside `Display.paused()`, so output never lands on a progress line.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.rule import Rule
from rich.text import Text

from .console import Display, TextStream, clock, json_line, printable
from ..run.jobs import Job
from ..run.outputs import cut_note
from ..settings import Settings


def tokens(n: int) -> str:
    return f"{n:,}"


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def cost(usd: float) -> str:
    return f"${usd:.4f}" if usd < 100 else f"${usd:,.2f}"


def calls_words(data: dict[str, Any]) -> str:
    """`5 calls`, or `5 calls (+1 repeated after an interruption)` when an interrupted run's call was made again
    (its first attempt was paid for too; its tokens are not known)."""
    words = count(len(data.get("calls") or []), "call")
    hits = int((data.get("usage") or {}).get("cache_hits") or 0)
    if hits:
        words += f" ({hits} from the completion cache)"
    repeated = int((data.get("usage") or {}).get("repeated_calls") or 0)
    return f"{words} (+{repeated} repeated after an interruption)" if repeated else words


def usage_line(data: dict[str, Any]) -> str:
    u = data.get("usage") or {}
    strategy = f", strategy {data['strategy']}" if data.get("strategy") else ""
    return (
        f"usage: {calls_words(data)}, {tokens(u.get('prompt_tokens', 0))} prompt + "
        f"{tokens(u.get('completion_tokens', 0))} completion tokens, {cost(u.get('cost_usd', 0.0))}, "
        f"{u.get('seconds', 0.0):.1f} s, window {data.get('window')}, model {data.get('model')}{strategy}"
    )


def citation_lines(data: dict[str, Any]) -> list[str]:
    citations = data.get("citations") or []
    if not citations:
        return ["citations: none (no part of the document was used as evidence)"]
    lines = ["citations:"]
    for c in citations:
        lines.append(f"  segment {c['segment'] + 1}/{data.get('segments')}: chars {c['start']}-{c['end']}")
    return lines


def done_line(job: Job, data: dict[str, Any]) -> str:
    u = data.get("usage") or {}
    return (
        f"done {job.name}: {count(data.get('segments', 0), 'segment')}, {calls_words(data)}, "
        f"{tokens(u.get('prompt_tokens', 0) + u.get('completion_tokens', 0))} tokens in {u.get('seconds', 0.0):.1f} s"
    )


class Printer:
    """Writes each document's result to stdout as it finishes (or, streaming, as its answer is written)."""

    def __init__(self, settings: Settings, display: Display, *, headings: bool):
        self.settings = settings
        self.display = display
        self.headings = headings
        self.out = Console(highlight=False)  # stdout
        self.estimates: list[Any] = []

    def _echo(self, text: str = "", keep: str = "") -> None:
        """A line (or, with keep="\\n\\t", a text) on stdout; names and model text escaped for the terminal."""
        typer.echo(printable(text, keep=keep))

    def json_line(self, data: dict[str, Any]) -> None:
        with self.display.paused():
            typer.echo(json_line(data))

    def heading(self, job: Job) -> None:
        if not self.headings:
            return
        if self.out.is_terminal:
            self.out.print(Rule(Text(printable(job.name)), align="left"))
        else:
            self._echo(f"==> {job.name} <==")

    # -- streaming -----------------------------------------------------------------------------------------------
    def stream_for(self, job: Job) -> TextStream | None:
        """A TextStream for the document's answer, when it should stream (text output to stdout, --no-stream off)."""
        s = self.settings
        if s.as_json or s.dry_run or not s.stream or s.writes_files:
            return None
        return TextStream(self.display, before=lambda: self.heading(job))

    # -- results -------------------------------------------------------------------------------------------------
    def result(self, job: Job, data: dict[str, Any], stream: TextStream | None = None) -> None:
        if self.settings.trace:
            self.trace(data)
        if self.settings.as_json:
            self.json_line(data)
            return
        streamed = stream is not None and stream.started
        if streamed:
            stream.close()  # the display is paused since the first chunk
        else:
            self.display.pause()
        try:
            if not streamed and data.get("data") is not None:  # --schema: the object is the result
                self.heading(job)
                typer.echo(json_line(data["data"], indent=2))  # escaped for the terminal, still the same JSON
            elif not streamed:
                self.heading(job)
                self._text(str(data.get("answer", data.get("summary", "")) or "").strip())
            tail = []
            mark = cut_note(data)
            if mark:
                tail.append(mark)
            if streamed or not self.out.is_terminal:  # rich's Markdown ends with its own blank line
                self._echo()
            for line in tail + citation_lines(data) + [usage_line(data)]:
                self._line(line)
            if self.headings:
                self._echo()
        finally:
            if streamed:
                stream.resume()
            else:
                self.display.resume()

    def _text(self, text: str) -> None:
        if self.out.is_terminal:
            self.out.print(Markdown(printable(text, keep="\n\t")))
        else:
            self._echo(text, keep="\n\t")

    def _line(self, line: str) -> None:
        if self.out.is_terminal:
            self.out.print(printable(line), style="dim", markup=False, highlight=False, soft_wrap=True)
        else:
            self._echo(line)

    def trace(self, data: dict[str, Any]) -> None:
        from .trace import trace_lines

        with self.display.paused():
            for line in trace_lines(data):
                typer.echo(printable(line), err=True)

    def output_file(self, path: str) -> None:
        with self.display.paused():
            self._echo(path)

    # -- dry runs ------------------------------------------------------------------------------------------------
    def estimate(self, job: Job, data: dict[str, Any], estimate: Any) -> None:
        self.estimates.append(estimate)
        if self.settings.as_json:
            self.json_line({**data, "dry_run": True, "estimate": estimate.to_dict()})
            return
        with self.display.paused():
            self._echo(
                f"{job.name}: {count(data.get('segments', 0), 'segment')}, {count(estimate.calls, 'call')}, "
                f"{tokens(estimate.prompt_tokens)} prompt tokens + at most {tokens(estimate.completion_tokens_max)} "
                f"completion tokens, window {data.get('window')}"
            )
            self._echo(f"  {self.estimate_words(str(data.get('model')), estimate)}")

    @staticmethod
    def estimate_words(model: str, estimate: Any) -> str:
        if estimate.speed is not None:
            speed = estimate.speed
            return (
                f"estimated time with {model} on this machine: at most {clock(estimate.seconds_max)} "
                f"(measured {speed.prefill_tokens_per_second:,.0f} prompt tokens/s and "
                f"{speed.decode_tokens_per_second:,.1f} generated tokens/s; every call writing its full cap)"
            )
        if estimate.price == (0.0, 0.0):
            return f"estimated cost with {model}: no price known (free, or not in litellm's price table)"
        return (
            f"estimated cost with {model}: at most {cost(estimate.cost_usd_max)} "
            "(completion counted at each call's max_new_tokens: an upper bound)"
        )

    def totals(self, model: str) -> None:
        if not (self.settings.dry_run and not self.settings.as_json and len(self.estimates) > 1):
            return
        total = self.estimates[0]
        for estimate in self.estimates[1:]:
            total = total + estimate
        with self.display.paused():
            self._echo(
                f"total: {count(len(self.estimates), 'document')}, {count(total.calls, 'call')}, "
                f"{tokens(total.prompt_tokens)} prompt tokens + at most {tokens(total.completion_tokens_max)} "
                "completion tokens"
            )
            self._echo(f"  {self.estimate_words(model, total)}")

