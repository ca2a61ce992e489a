"""The output contract on a real terminal: a pseudo-terminal (pexpect) rendered by a terminal emulator (pyte).

What a person sees at the end must hold every line of output: no line erased, no answer on a progress line,
no progress left on screen. A pipe or a file gets no control codes, and with --json nothing but JSON lines.
The model is a MockModel that takes a little time per call and streams its final answer in pieces.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pexpect
import pyte
import pytest

from .test_cli import PARAGRAPH

pytestmark = pytest.mark.integration  # a real terminal: pexpect and pyte

REPO = Path(__file__).resolve().parents[1]
ANSWER = ("The harbour master counted twelve boats on the calm mornings and fewer on the windy ones, "
          "and he wrote every number in a green book.")
PIECE = 9  # characters per streamed piece
BOOTSTRAP = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from longread import backends
from longread.testing import MockModel

class Streaming(MockModel):
    streams = True  # takes on_text, like the litellm backend and the local engine

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None,
                  on_text=None):
        time.sleep(0.15)
        completion = super()._complete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)
        if on_text is not None:
            for i in range(0, len(completion.text), {PIECE}):
                on_text(completion.text[i:i + {PIECE}])
                time.sleep(0.05)
        return completion

import json, os
replies = {{"manager": {ANSWER!r}, **json.loads(os.environ.get("TEST_REPLIES", "{{}}"))}}
backends.get_model = lambda *a, **k: Streaming(completion_tokens=24, replies=replies)
from longread.cli import app
app()
"""
COLUMNS, ROWS = 120, 400  # tall enough that nothing scrolls off the emulated screen
PROGRESS = re.compile(r"tok/s|ETA|segment \d+/\d+|\d+/\d+ documents|reading|writing the answer")


NAMES = ("one.txt", "two.txt", "three.txt")
NOTE = "The harbour master counted twelve boats."  # a worker's note
MOVES_UP = re.compile(r"\x1b\[\d*A")  # cursor up: what a live display does to redraw itself


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in NAMES[:2]:
        (docs / name).write_text("\n\n".join(f"Paragraph {i} of {name}. " + PARAGRAPH * 3 for i in range(10)))
    return docs


@pytest.fixture
def three(tmp_path):
    docs = tmp_path / "three"
    docs.mkdir()
    for name in NAMES:
        (docs / name).write_text("\n\n".join(f"Paragraph {i} of {name}. " + PARAGRAPH * 3 for i in range(10)))
    return docs


def spawn(tmp_path: Path, *args: str, shell: str | None = None, replies: dict | None = None) -> pexpect.spawn:
    script = tmp_path / "longread_bootstrap.py"
    script.write_text(BOOTSTRAP)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS),
           "LONGREAD_WORKSPACE": str(tmp_path / "workspace"), "LONGREAD_CONFIG": str(tmp_path / "config.toml"),
           "TEST_REPLIES": json.dumps(replies or {}),
           "LONGREAD_MODEL": "mock"}  # (the stand-in is built whatever the name; `local` adds its small-model note)
    env.pop("NO_COLOR", None)
    command = [sys.executable, str(script), *args]
    if shell is not None:  # stdout redirected by a shell, stderr still the terminal
        return pexpect.spawn("bash", ["-c", " ".join(f"'{c}'" for c in command) + " " + shell], env=env,
                             encoding="utf-8", dimensions=(ROWS, COLUMNS), timeout=120)
    return pexpect.spawn(command[0], command[1:], env=env, encoding="utf-8", dimensions=(ROWS, COLUMNS), timeout=120)


def screen_of(raw: str) -> list[str]:
    screen = pyte.Screen(COLUMNS, ROWS)
    pyte.Stream(screen).feed(raw.replace("\n", "\r\n") if "\r\n" not in raw else raw)
    return [line.rstrip() for line in screen.display]


def squeezed(text: str) -> str:
    """Text without whitespace: a line the terminal wrapped reads the same as the line."""
    return "".join(text.split())


def read_all(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF)
    raw = child.before
    child.close()
    return raw


def test_a_folder_run_on_a_terminal_keeps_every_line_and_no_progress(tmp_path, folder):
    child = spawn(tmp_path, "ask", str(folder), "How many boats?", "--window", "512")
    raw = read_all(child)
    assert child.exitstatus == 0, raw[-2000:]
    lines = [line for line in screen_of(raw) if line]

    # While it ran, the display showed the position, the phase, the speed and an ETA.
    for shown in ("segment 2/", "reading", "writing the answer", "tok/s", "ETA", "/2 documents"):
        assert shown in raw, shown
    # At the end: every line of output, in order, and none of the display.
    leftovers = [line for line in lines if PROGRESS.search(line) and not line.startswith("  segment ")]
    assert not leftovers, lines  # ("  segment k/n: chars a-b" lines are citations)
    for name in ("one.txt", "two.txt"):
        heading = next(i for i, line in enumerate(lines) if line.startswith(str(folder / name)))
        answer = "".join(lines[heading + 1 : heading + 3])
        assert squeezed(answer).startswith(squeezed(ANSWER))  # on its own lines, right under its heading
    assert len([line for line in lines if line.startswith("usage: ")]) == 2
    assert len([line for line in lines if line == "citations:"]) == 2
    assert len([line for line in lines if line.startswith("done ")]) == 2


def test_the_answer_streams_as_it_is_written(tmp_path, folder):
    child = spawn(tmp_path, "ask", str(folder / "one.txt"), "How many boats?", "--window", "512")
    child.expect_exact(ANSWER[:PIECE])  # the first piece is on screen ...
    assert ANSWER[-PIECE:] not in child.before + child.after  # ... before the last one is written
    raw = child.after + read_all(child)
    assert child.exitstatus == 0
    assert squeezed(ANSWER) in squeezed("".join(screen_of(raw)))


def test_json_on_a_terminal_writes_nothing_but_json_to_stdout(tmp_path, folder):
    out = tmp_path / "out.jsonl"
    child = spawn(tmp_path, "ask", str(folder), "How many boats?", "--window", "512", "--json", shell=f"> '{out}'")
    raw = read_all(child)
    assert child.exitstatus == 0
    # stdout is not the terminal, so text written there could land on the screen without passing through the
    # display (`| tee`): no live display, plain progress lines on stderr instead.
    assert "segment 1/5  reading" in raw and not MOVES_UP.search(raw)
    text = out.read_text()
    assert "\x1b" not in text and "\r" not in text  # ... and never reached stdout
    objects = [json.loads(line) for line in text.splitlines()]
    assert [Path(o["source"]).name for o in objects] == ["one.txt", "two.txt"]
    assert all(o["answer"] == ANSWER for o in objects)


def test_text_to_a_file_has_no_control_codes(tmp_path, folder):
    out = tmp_path / "out.txt"
    child = spawn(tmp_path, "ask", str(folder), "How many boats?", "--window", "512", shell=f"> '{out}'")
    read_all(child)
    assert child.exitstatus == 0
    text = out.read_text()
    assert "\x1b" not in text and "\r" not in text
    assert text.count(ANSWER) == 2 and text.count("==> ") == 2


def output_lines(raw: str) -> list[str]:
    return [line for line in screen_of(raw) if line]


def test_a_summarized_folder_keeps_every_path_on_screen(tmp_path, three):
    # Each path is printed while the display steps aside; the display that comes back must not erase it (rich's
    # Live, started again, moved up by the height it last drew and erased those lines).
    out = tmp_path / "sums"
    child = spawn(tmp_path, "summarize", str(three), "--out", str(out), "--window", "512")
    raw = read_all(child)
    assert child.exitstatus == 0, raw[-2000:]
    assert MOVES_UP.search(raw)  # the live display ran (and redrew itself)
    lines = output_lines(raw)
    paths = [line for line in lines if line.endswith(".summary.md")]
    assert paths == [str(out / f"{name}.summary.md") for name in sorted(NAMES)]
    assert len([line for line in lines if line.startswith("done ")]) == 3
    assert not [line for line in lines if PROGRESS.search(line) and not line.startswith("done ")], lines
    assert only_paths_and_done_lines(lines, out, three)


def only_paths_and_done_lines(lines: list[str], out: Path, docs: Path) -> bool:
    """The screen holds, in order, each summary path then its `done` line, and nothing else (lines the terminal
    wrapped at 120 columns read as one)."""
    expected = "".join(
        re.escape(f"{out / name}.summary.md") + re.escape(f"done{docs / name}:") + r"\d+segments,\d+calls,[\d,]+tokensin[\d.]+s"
        for name in sorted(NAMES))
    return re.fullmatch(expected, squeezed("".join(lines))) is not None


def test_three_documents_read_at_once_keep_the_screen_above(tmp_path, three):
    # --jobs 3: a display four lines high; every line above it, and every result, stays.
    out = tmp_path / "sums"
    child = spawn(tmp_path, "summarize", str(three), "--out", str(out), "--window", "512", "--jobs", "3")
    child.sendline("")  # (a line typed before the run is not lost either)
    raw = read_all(child)
    assert child.exitstatus == 0, raw[-2000:]
    lines = output_lines(raw)
    assert [line for line in lines if line.endswith(".summary.md")] == [
        str(out / f"{name}.summary.md") for name in sorted(NAMES)]
    assert only_paths_and_done_lines(lines, out, three), lines


def test_a_run_after_output_on_screen_erases_none_of_it(tmp_path, three):
    # What was on the terminal before the command stays: the shell's earlier lines.
    child = spawn(tmp_path, "ask", str(three), "How many boats?", "--window", "512", "--jobs", "3",
                  shell="", replies=None)
    raw = read_all(child)
    assert child.exitstatus == 0, raw[-2000:]
    before = "".join(f"earlier line {i}\r\n" for i in range(5))
    lines = output_lines(before + raw)
    assert lines[:5] == [f"earlier line {i}" for i in range(5)]
    assert len([line for line in lines if line.startswith("usage: ")]) == 3
    assert len([line for line in lines if line.startswith("done ")]) == 3


def test_a_reply_that_auto_replaces_is_never_printed(tmp_path, folder):
    # The retrieval step's reader says the excerpts do not hold the answer; auto then reads the whole document.
    refusal = "UNANSWERABLE: the excerpts do not say."
    child = spawn(tmp_path, "ask", str(folder / "one.txt"), "How many boats?", "--window", "512",
                  "--strategy", "auto", replies={"reader": "UNANSWERABLE", "worker": NOTE})
    raw = read_all(child)
    assert child.exitstatus == 0, raw[-2000:]
    assert "UNANSWERABLE" not in raw and refusal not in raw
    assert "retrieval found nothing, reading every part" in raw  # the display said what auto did
    # What is printed is the fallback's answer (the same run's --json says which), and nothing before it.
    out = tmp_path / "answer.json"
    again = spawn(tmp_path, "ask", str(folder / "one.txt"), "How many boats?", "--window", "512", "--strategy", "auto",
                  "--json", "--force", shell=f"> '{out}'", replies={"reader": "UNANSWERABLE", "worker": NOTE})
    read_all(again)
    answer = json.loads(out.read_text())["answer"]
    assert answer and "UNANSWERABLE" not in answer
    assert squeezed("".join(output_lines(raw))).startswith(squeezed(answer))


def test_an_answer_retrieval_found_is_printed_once(tmp_path, folder):
    # an answer that stands on its excerpts (ANSWER's "twelve" is in no excerpt: auto would read the whole text)
    found = "He counted the boats each morning at dawn and wrote the number in a green book."
    child = spawn(tmp_path, "ask", str(folder / "one.txt"), "How many boats?", "--window", "512",
                  "--strategy", "auto", replies={"reader": found})
    raw = read_all(child)
    assert child.exitstatus == 0, raw[-2000:]
    assert "retrieval answered" in raw
    assert squeezed("".join(output_lines(raw))).count(squeezed(found)) == 1


def test_verbose_says_what_auto_did(tmp_path, folder):
    child = spawn(tmp_path, "--verbose", "ask", str(folder / "one.txt"), "How many boats?", "--window", "512",
                  "--strategy", "auto", replies={"reader": "UNANSWERABLE"})
    raw = read_all(child)
    assert child.exitstatus == 0, raw[-2000:]
    said = squeezed("".join(output_lines(raw)))
    assert squeezed("auto: retrieval could not answer") in said and squeezed("reading the whole document") in said


@pytest.mark.slow
def test_ctrl_c_during_a_local_model_run_exits_130_cleanly(tmp_path):
    # The real embedded model: its engine decodes in a thread of its own, which must stop before Python exits
    # (else: "terminate called without an active exception", exit 134).
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": "50",
           "LONGREAD_WORKSPACE": str(tmp_path / "workspace"), "LONGREAD_CONFIG": str(tmp_path / "config.toml")}
    story = REPO / "examples" / "lighthouse_keeper.md"
    child = pexpect.spawn(sys.executable, ["-m", "longread", "ask", str(story), "Why did Ada stop lighting the lamp?",
                                           "--window", "2048", "--strategy", "chain"],
                          env=env, encoding="utf-8", dimensions=(50, COLUMNS), timeout=300)
    child.expect("segment 1/")  # the engine is reading
    child.sendintr()
    raw = read_all(child)
    assert child.exitstatus == 130, raw[-2000:]
    assert "interrupted after 0 of 1 document(s)" in " ".join(screen_of(raw))
    assert "terminate called" not in raw and "Aborted" not in raw
