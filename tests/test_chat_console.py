"""`longread chat` driven as a person would (pexpect on a pseudo-terminal), and as a script (stdin not a tty)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pexpect
import pytest
from typer.testing import CliRunner

from longread import backends
from longread.cli.run.chat_session import RECENT_ITEMS
from longread.cli import app
from longread.testing import MockModel

from .test_reader_memory import scripted

REPO = Path(__file__).resolve().parents[1]
STORY = REPO / "examples" / "lighthouse_keeper.md"
LONGREAD = Path(sys.executable).parent / "longread"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")

# A model that answers from memory like `scripted`, and takes a minute over any question with "slowly" in it.
SLOW_BOOTSTRAP = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from longread import backends
from longread.testing import MockModel
from tests.test_reader_memory import is_memory_call, scripted
replies = scripted()
answer = replies["manager"]
def manager(call):
    if is_memory_call(call) and "slowly" in call.messages[-1]["content"].split("Question:")[-1]:
        sys.stderr.write("[the slow call started]\\n"); sys.stderr.flush()
        time.sleep(60)
    return answer(call)
backends.get_model = lambda *a, **k: MockModel(completion_tokens=24, replies={{**replies, "manager": manager}})
from longread.cli import app
app()
"""


class Screen:
    """A pexpect child and what it has shown, escape codes removed."""

    def __init__(self, args: list[str], program: str = str(LONGREAD)):
        env = {**os.environ, "TERM": "xterm", "NO_COLOR": "1", "COLUMNS": "160", "LINES": "50"}
        self.child = pexpect.spawn(program, args, env=env, encoding="utf-8", dimensions=(50, 160), timeout=90,
                                   cwd=str(REPO))
        self.shown = ""

    def until(self, pattern: str) -> str:
        """Waits for pattern; returns the text shown since the previous wait."""
        self.child.expect(pattern)
        text = ANSI.sub("", self.child.before + self.child.after)
        self.shown += text
        return text

    def say(self, line: str) -> str:
        """Types a line at the prompt; returns what the session shows until its next prompt."""
        self.child.sendline(line)
        return self.until("you>")


@pytest.fixture
def workspace(tmp_path):
    return tmp_path / "workspace"


@pytest.mark.integration  # a real terminal
def test_a_person_asks_two_questions_looks_at_memory_quits_and_comes_back(workspace):
    args = ["chat", str(STORY), "--model", "mock", "--window", "1024", "--session", "ada",
            "--workspace", str(workspace)]
    screen = Screen(args)
    opening = screen.until("you>")
    read = re.search(r"read \S+lighthouse_keeper.md: (\d+) segment\(s\), (\d+) notes in memory", opening)
    assert read, opening
    segments, notes = int(read.group(1)), int(read.group(2))
    assert segments >= 3 and notes == segments  # every summary note is archived
    assert "session ada" in opening and "/help lists the commands" in opening

    first = screen.say("Who keeps the light at Carrow Point?")
    assert "answered from memory" in first and "no segment was read again" in first
    assert re.search(r"sources: part \d+ \(chars \d+-\d+\)", first)
    second = screen.say("What is the cat called?")
    assert "answered from memory" in second

    memory = screen.say("/memory")
    # notes + the summary + two questions + two answers
    assert f"memory of session ada: {notes + 1 + 4} item(s)" in memory
    # "the 8 most recent" only when there are more than 8 (not "6 item(s), the 8 most recent")
    assert ("most recent" in memory) == (notes + 1 + 4 > RECENT_ITEMS)
    assert "What is the cat called?" in memory and "Who keeps the light at Carrow Point?" in memory
    for kind in ("question", "answer", "summary", "note"):
        assert kind in memory
    assert "activated for: What is the cat called?" in memory
    assert re.search(r"\bscore\b.*\brelevance\b.*\brecency\b", memory)

    screen.child.sendline("/quit")
    screen.child.expect(pexpect.EOF)
    screen.child.close()
    assert screen.child.exitstatus == 0

    # Reopening the session restores memory and history, and does not read the document again.
    again = Screen(args)
    opening = again.until("you>")
    assert "2 earlier turn(s) restored" in opening and f"{notes} notes of the document in memory" in opening
    assert "What is the cat called?" in opening
    assert "read " not in opening.split("restored", 1)[1].split("you>")[0]
    third = again.say("Where is the lamp?")
    assert "answered from memory" in third
    assert f"{notes + 1 + 6} item(s)" in again.say("/memory")
    time.sleep(0.5)  # the prompt is drawn before readline takes the terminal; a Ctrl-D sent earlier can be lost
    again.child.sendeof()  # Ctrl-D leaves too
    again.child.expect(pexpect.EOF)
    again.child.close()
    assert again.child.exitstatus == 0


@pytest.mark.integration  # a real terminal, Ctrl-C
def test_ctrl_c_cancels_the_answer_not_the_session(workspace, tmp_path):
    args = ["-c", SLOW_BOOTSTRAP, "chat", str(STORY), "--window", "1024", "--session", "storm",
            "--workspace", str(workspace)]
    screen = Screen(args, program=sys.executable)
    screen.until("you>")
    screen.child.sendline("Tell me slowly about the storm.")
    screen.child.expect("the slow call started")  # the answer is under way (not only its display)
    screen.child.sendintr()
    assert "answer cancelled" in screen.until("you>")

    answer = screen.say("Did the keeper see an otter?")
    assert "From memory: the keeper saw an otter." in answer and "answered from memory" in answer
    sources = screen.say("/sources")
    assert re.search(r"part \d+, chars \d+-\d+", sources)
    saved = tmp_path / "talk.md"
    assert "saved 1 turn(s)" in screen.say(f"/save {saved}")
    text = saved.read_text()
    assert "## 1. Did the keeper see an otter?" in text and "slowly" not in text  # the cancelled turn is gone
    saved.write_text("my notes")
    screen.child.sendline(f"/save {saved}")  # a file that exists is replaced only when the person says so
    screen.until("overwrite it?")
    assert "not saved" in screen.say("n") and saved.read_text() == "my notes"
    screen.child.sendline(f"/save {saved}")
    screen.until("overwrite it?")
    assert "saved 1 turn(s)" in screen.say("y") and "## 1. Did the keeper" in saved.read_text()
    assert "conversation reset" in screen.say("/reset")
    assert "activated: nothing yet" in screen.say("/memory")
    assert "/sources" in screen.say("/help")
    assert "unknown command /frobnicate" in screen.say("/frobnicate")
    screen.child.sendline("/quit")
    screen.child.expect(pexpect.EOF)
    screen.child.close()
    assert screen.child.exitstatus == 0


def test_a_scripted_session_reads_one_question_per_line(workspace, monkeypatch):
    models: list[MockModel] = []

    def fake_get_model(*args, **kwargs):
        models.append(MockModel(completion_tokens=24, replies=scripted()))
        return models[-1]

    monkeypatch.setattr(backends, "get_model", fake_get_model)
    runner = CliRunner()
    args = ["chat", str(STORY), "--window", "1024", "--workspace", str(workspace)]
    result = runner.invoke(app, args, input="Did the keeper see an otter?\n\n/memory\nWhere is the lamp?\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "> Did the keeper see an otter?" in out and "> Where is the lamp?" in out
    assert out.count("From memory: the keeper saw an otter.") == 2
    assert out.count("answered from memory") == 2
    assert "memory of session doc-" in out  # the default session comes from the document
    workers = models[0].calls_by("worker")
    assert workers, "the document was read once"

    # The same command again: the session is found from the document, and nothing is read.
    again = runner.invoke(app, args, input="Did the keeper see a heron?\n")
    assert again.exit_code == 0, again.output
    assert "2 earlier turn(s) restored" in again.stderr
    assert [len(c.messages) for c in models[1].calls] == [2]  # one call: the answer from memory
    assert "answered from memory" in again.stdout


def test_the_session_gets_the_commands_settings_and_its_document_and_name(workspace, monkeypatch):
    """ChatSettings is the command line's Settings (names and defaults in one place) plus the path and session."""
    from longread.cli.run import chat_session
    from longread.cli.settings import Settings

    seen = []
    monkeypatch.setattr(chat_session, "run_chat", lambda settings: seen.append(settings) or 0)
    args = ["chat", str(STORY), "--model", "mock", "--window", "1024", "--kv", "quant:4", "--strategy", "chain",
            "--json", "--quiet", "--no-stream", "--timeout", "5", "--session", "s1", "--workspace", str(workspace)]
    assert CliRunner().invoke(app, args).exit_code == 0
    (settings,) = seen
    assert isinstance(settings, Settings) and (settings.path, settings.session) == (str(STORY), "s1")
    assert (settings.command, settings.model, settings.window, settings.kv, settings.strategy, settings.workspace) == (
        "chat", "mock", 1024, "quant:4", "chain", workspace)
    assert (settings.as_json, settings.quiet, settings.stream, settings.timeout, settings.api_base) == (
        True, True, False, 5.0, None)
    assert CliRunner().invoke(app, ["chat", str(STORY), "--model", "mock", "--workspace", str(workspace)]).exit_code == 0
    defaults = seen[-1]
    assert (defaults.session, defaults.as_json, defaults.quiet, defaults.stream) == (None, False, False, True)


def test_bad_document_is_one_clear_error(tmp_path, workspace):
    missing = tmp_path / "nope.txt"
    result = CliRunner().invoke(app, ["chat", str(missing), "--model", "mock", "--workspace", str(workspace)])
    assert result.exit_code == 1
    assert str(missing) in result.stderr and "error:" in result.stderr


def test_an_interrupted_reading_resumes_where_it_stopped(workspace, monkeypatch):
    models: list[MockModel] = []

    def fake_get_model(*args, **kwargs):
        # The first run is interrupted (Ctrl-C) during its third worker call.
        models.append(MockModel(completion_tokens=24, replies=scripted(),
                                fail_on_calls={3} if not models else set(), failure=KeyboardInterrupt))
        return models[-1]

    monkeypatch.setattr(backends, "get_model", fake_get_model)
    runner = CliRunner()
    args = ["chat", str(STORY), "--window", "1024", "--session", "resume", "--workspace", str(workspace)]
    first = runner.invoke(app, args, input="Did the keeper see an otter?\n")
    assert first.exit_code == 130 and "reading interrupted" in first.stderr
    assert "Did the keeper see an otter?" not in first.stdout

    second = runner.invoke(app, args, input="Did the keeper see an otter?\n")
    assert second.exit_code == 0, second.output
    parts = [int(m) for c in models[1].calls
             for m in re.findall(r"Source text \(part (\d+)\)", c.messages[-1]["content"])]
    segments = int(re.search(r"(\d+) segment\(s\)", second.stderr).group(1))
    assert parts == list(range(3, segments + 1))  # parts 1 and 2 were read before the interruption
    assert f"{segments} notes in memory" in second.stderr  # each part's note once
    assert "answered from memory" in second.stdout


def test_a_fresh_read_streams_its_answer_once_and_a_memory_reply_is_never_streamed(workspace, monkeypatch):
    from .test_cli_conventions import Streaming

    # Memory cannot answer, so each question is read again: that read's manager answer streams.
    model = Streaming(completion_tokens=24, replies=scripted(memory_reply="INSUFFICIENT"))
    monkeypatch.setattr(backends, "get_model", lambda *a, **k: model)
    args = ["chat", str(STORY), "--window", "1024", "--workspace", str(workspace)]
    result = CliRunner().invoke(app, args, input="Did the keeper see an otter?\n")
    assert result.exit_code == 0, result.output
    # The memory reply judged insufficient was never shown (only the reason line names it).
    assert not [line for line in result.stdout.splitlines() if line.startswith("INSUFFICIENT")]
    assert result.stdout.count("Manager answer.") == 1  # streamed, and not printed again
    assert "manager" in model.streamed and "answered from chain" in result.stdout
