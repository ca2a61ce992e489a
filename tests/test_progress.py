"""Progress that tells the truth: what a line shows is computed when the display draws it, from rates measured in
this run, so clocks and ETAs move between events; a call over retrieved text shows how long it has run, not a
per-segment ETA; a finished document leaves the display. The clock is a fake one, moved by the test."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from longread.cli.display import console as console_module
from longread.cli.display.console import Display, StatsColumn
from longread.results import CallRecord, ReadEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TerminalOut(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(console_module.time, "monotonic", fake)
    return fake


def display(documents: int = 1) -> Display:
    return Display(Console(file=io.StringIO(), force_terminal=True, width=120), documents, stdout=TerminalOut())


def drawn(shown: Display, line) -> str:  # noqa: ANN001
    """The right-hand text of a document's line as the display draws it now."""
    task = next(t for t in shown.progress.tasks if t.id == line.task)
    return StatsColumn().render(task).plain


def record(agent: str, segment: int | None, tokens: int = 100) -> CallRecord:
    return CallRecord(agent=agent, segment=segment, prompt_tokens=tokens, completion_tokens=0, seconds=0.0,
                      max_new_tokens=64)


def event(kind: str, agent: str, segment: int | None, segments: int, tokens: int = 100) -> ReadEvent:
    return ReadEvent(kind, agent, segment, segments, record(agent, segment, tokens) if kind == "call_finished" else None,
                     "book.txt")


def test_the_eta_and_the_clocks_tick_between_events(clock):
    shown = display(documents=3)
    line = shown.document("book.txt")
    line.on_event(event("call_started", "worker", 0, 5))
    clock.now += 10
    line.on_event(event("call_finished", "worker", 0, 5, tokens=500))
    line.on_event(event("call_started", "worker", 1, 5))
    # 4 segments + the final call left at 10 s each: 50 s; 3 s into the call under way: 47 s.
    clock.now += 3
    assert "ETA 0:47" in drawn(shown, line) and "50 tok/s" in drawn(shown, line)
    clock.now += 1  # no event: the line drawn a second later says one second less
    assert "ETA 0:46" in drawn(shown, line)
    overall = next(t for t in shown.progress.tasks if t.id == shown.overall)
    assert StatsColumn().render(overall).plain == "elapsed 0:14"  # the overall line's clock moves too
    clock.now += 100  # a call that runs past its share: the ETA stays at 0, never negative
    assert "ETA 0:00" in drawn(shown, line)


def test_a_call_over_retrieved_text_shows_its_time_not_a_segment_eta(clock):
    shown = display()
    line = shown.document("book.txt")
    line.on_event(event("call_started", "reader", None, 31))  # rag: 31 chunks ranked, one call
    clock.now += 7
    stats = drawn(shown, line)
    assert "call 0:07" in stats and "ETA" not in stats
    assert line.tally.segments is None  # chunks are not segments to read: no bar counting to 31


def test_what_auto_did_is_shown_until_the_next_call(clock):
    line = display().document("book.txt")
    line.on_event(event("call_started", "reader", None, 9))
    line.on_event(event("call_finished", "reader", None, 9))
    line.on_event(ReadEvent("routed", "reader", None, 9, None, "book.txt",
                            message="retrieval found nothing, reading every part"))
    assert line.description().endswith("retrieval found nothing, reading every part")
    line.on_event(event("call_started", "worker", 0, 4))
    assert "segment 1/4" in line.description() and "retrieval" not in line.description()


def test_a_finished_document_leaves_the_display_before_it_is_reported(clock):
    shown = display(documents=2)
    first, second = shown.document("one.txt"), shown.document("two.txt")
    assert len(shown.progress.tasks) == 3  # the overall line and two documents
    shown.retire(second)  # read (--jobs), waiting for one.txt to be reported first
    assert [t.description for t in shown.progress.tasks if t.id != shown.overall] == [first.description()]
    assert shown.done == 0  # counted when reported, in the documents' order
    shown.finish(second, "done")
    assert shown.done == 1 and second.task is None


def test_stdout_not_on_the_terminal_gets_plain_lines_not_a_live_display(clock):
    err = io.StringIO()
    shown = Display(Console(file=err, force_terminal=True, width=120), 1, stdout=io.StringIO())  # `| tee`
    assert not shown.live and shown.plain
    line = shown.document("book.txt")
    line.on_event(event("call_started", "worker", 0, 5))
    clock.now += 2
    line.on_event(event("call_finished", "worker", 0, 5))
    line.on_event(event("call_started", "worker", 1, 5))  # within PLAIN_EVERY of the first line: not printed
    clock.now += Display.PLAIN_EVERY
    line.on_event(event("call_started", "worker", 2, 5))
    lines = [l for l in err.getvalue().splitlines() if l.strip()]
    assert len(lines) == 2 and "segment 1/5" in lines[0] and "segment 3/5" in lines[1]
    assert "\x1b[1A" not in err.getvalue() and "\x1b[2K" not in err.getvalue()  # nothing redrawn or erased
