"""`longread chat PATH`: an interactive session about one document, in a rich console.

The document is read once (a summary-mode Chain-of-Agents pass whose notes go to the memory stream, with a
progress bar); then each question goes through the session graph of workflows/chat.py: answered from memory
when the notes hold the answer, by a fresh chain pass when they do not (the console says which, and why).

Everything of a session lives in WORKSPACE/sessions/<session>/: `memory.sqlite` (the memory stream) and
`chat.sqlite` (the graph's checkpoints: the turn history). Reopening the same `--session` restores both; the
reading pass itself checkpoints into WORKSPACE/checkpoints.sqlite like `ask` and `summarize`, so a reading that was
interrupted resumes.

On a terminal: a prompt with commands (/help lists them); Ctrl-C during an answer cancels that answer, not the
session; Ctrl-D or /quit leaves. When stdin is not a terminal, each line is a question or a command, so sessions
can be scripted: `printf 'Who is Ada?\\n/memory\\n' | longread chat story.md`.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console, Group
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ... import backends
from ...backends.base import ChatModel
from ..display.console import Display, TextStream, note, stderr_console
from ..settings import Settings
from ...documents import Document, load_source
from ...errors import LongreadError
from ...memory.embedders import embedder_for
from ...memory.store import EmbedderMismatch
from ...reader import ChainEvent, Reader, default_session
from ...workflows.chat import Turn, build_chat_graph, chat_config, history
from .workspace import checkpoints_path, label_threads, open_checkpointer

EXIT_INTERRUPTED = 130
RECENT_ITEMS = 8
SOURCE_CHARS = 700
COMMANDS = {
    "/memory": "recent memory items, and those the last question activated",
    "/sources": "the passages of the document the last answer cites",
    "/save FILE": "write the conversation (questions, answers, sources) to FILE as Markdown",
    "/reset": "forget this conversation (history, questions and answers); the document's notes stay",
    "/help": "this list",
    "/quit": "leave (Ctrl-D too); the session is kept: reopen it with the same --session",
}


@dataclass(frozen=True, kw_only=True)
class ChatSettings(Settings):
    """The command line's settings (model, window, kv, strategy, workspace, --json: one JSON object per answer,
    --quiet, --no-stream, --timeout, --api-base; their names and defaults are `Settings`'), and what a chat adds:
    the document and the session."""

    path: str | Path  # a file or an http(s) URL
    session: str | None = None  # None: named after the document's content

    @classmethod
    def of(cls, settings: Settings, *, path: str | Path, session: str | None) -> "ChatSettings":
        return cls(**{f.name: getattr(settings, f.name) for f in fields(Settings)}, path=path, session=session)


def session_folder(workspace: Path, session: str) -> Path:
    """WORKSPACE/sessions/<name>: the name kept where it is a safe file name, else made one (plus a hash, so two
    names never share a folder)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", session).strip(".-")[:80]
    if safe != session:
        safe = f"{safe or 'session'}-{hashlib.sha256(session.encode()).hexdigest()[:8]}"
    return workspace / "sessions" / safe


def memory_warning(folder: Path) -> str | None:
    """Why a session's memory starts from nothing when its history says it should not (or the file is empty)."""
    memory, chat = folder / "memory.sqlite", folder / "chat.sqlite"
    try:
        size = memory.stat().st_size
    except FileNotFoundError:
        size = None
    except OSError:
        return None  # MemoryStream says why it cannot open it
    had_history = chat.is_file() and chat.stat().st_size > 0
    if size is None and had_history:
        return (f"warning: {memory} is missing though the session has a history: its notes are gone, so the "
                "document is read again")
    if size == 0:
        return (f"warning: {memory} is empty (0 bytes)" + (": the session's notes are gone, so the document is read "
                "again" if had_history else ": the session starts from nothing"))
    return None


def _preview(text: str, chars: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


class ChatSession:
    """The commands and the rendering of one session; `ask` runs one turn through the graph."""

    def __init__(self, reader: Reader, checkpointer: Any, out: Console, err: Console, *, as_json: bool = False,
                 quiet: bool = False, stream: bool = True):
        self.reader = reader
        self.out = out
        self.err = err
        self.as_json = as_json
        self.quiet = quiet
        self.streamed = False
        self.checkpointer = checkpointer
        self._on_event: Callable[[ChainEvent], None] | None = None
        self._stream: TextStream | None = None
        steps = reader.chat_steps(on_event=self._event)
        if stream and not as_json:
            # Only a fresh read streams its answer: a reply from memory is one short call that may still be judged
            # insufficient, and text on screen cannot be taken back.
            steps = replace(steps, read=lambda question: reader.read(question, on_event=self._event, on_text=self._text))
        self.graph = build_chat_graph(steps, checkpointer=checkpointer)
        self.config = chat_config(reader.session)

    @property
    def memory(self):
        assert self.reader.memory is not None
        return self.reader.memory

    def _event(self, event: ChainEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _text(self, piece: str) -> None:
        if self._stream is not None:
            self._stream(piece)

    def turns(self) -> list[Turn]:
        return history(self.graph, self.reader.session)

    # -- reading the document once ----------------------------------------------------------------------------------
    def read_once(self) -> None:
        """A summary pass whose notes fill memory, unless the session has read the document already.

        The summary is archived only when the pass is finished, so it marks a finished reading: notes alone may be
        those of a reading that was interrupted, which then resumes from its checkpoint."""
        if self.memory.items(self.reader.session, kinds=("summary",), last=1):
            notes = len(self.memory.items(self.reader.session, kinds=("note",)))
            turns = self.turns()
            self.note(f"session {self.reader.session}: {notes} notes of the document in memory, "
                      f"{len(turns)} earlier turn(s) restored", "dim")
            for turn in turns[-3:]:
                self.note(f"  you: {_preview(turn['question'])}  ->  {_preview(turn['answer'], 60)}", "dim")
            return
        started = time.monotonic()
        with Display(self.err, 1, enabled=not self.quiet) as display:
            line = display.document(self.reader.document.source, "summary")
            result = self.reader.summarize(on_event=line.on_event)
            display.finish(line, "done")
        notes = len(self.memory.items(self.reader.session, kinds=("note",)))
        earlier = ""
        if not notes and result.extras.get("reused"):
            notes = self.restore_notes(result)
            earlier = " (from an earlier reading with the same settings)" if notes else ""
        self.note(f"read {self.reader.document.source}: {result.segments} segment(s), {notes} notes in memory"
                  f"{earlier}, {time.monotonic() - started:.1f} s", "dim")

    def restore_notes(self, result: Any) -> int:
        """The document was read before with these settings (`longread summarize`, another session): its finished
        reading came back from the checkpoints without a call, so no worker archived its notes. They are in the
        reading's calls: each worker's notes, with the span of the part it read."""
        spans = {c.segment: c.to_dict() for c in result.citations}
        restored = 0
        for call in result.calls:
            if call.agent == "worker" and not call.passed_on and call.reply.strip() and call.segment in spans:
                self.memory.add(self.reader.session, "note", call.reply.strip(), spans=[spans[call.segment]])
                restored += 1
        return restored

    def note(self, message: str, style: str | None = None) -> None:
        if not self.quiet:
            note(self.err, message, style)

    # -- one turn ---------------------------------------------------------------------------------------------------
    def ask(self, question: str) -> Turn | None:
        """One turn; None when it was cancelled with Ctrl-C (nothing of it is kept in the history)."""
        done = len(self.turns())
        try:
            with Display(self.err, 1, enabled=not self.quiet) as display:
                line = display.document("answering")
                line.set_phase("from memory")
                self._on_event = line.on_event
                self._stream = TextStream(display)
                state = self.graph.invoke({"question": question}, self.config)
                self._stream.close()
                self.streamed = self._stream.started
                self._stream.resume()
                display.finish(line, "done")
        except KeyboardInterrupt:
            # The checkpoint of the cancelled turn stays pending; the next turn's input starts the graph afresh.
            note(self.err, "answer cancelled (the session goes on)", "yellow")
            return None
        finally:
            self._on_event = None
            if self._stream is not None:
                self._stream.resume()
            self._stream = None
        turns = state["history"]
        return turns[-1] if len(turns) > done else None

    def render(self, turn: Turn) -> None:
        if self.as_json:
            print(json.dumps(turn_json(turn), ensure_ascii=False), flush=True)
            return
        if self.streamed:
            self.streamed = False  # written as it came
        elif self.out.is_terminal:
            self.out.print(Markdown(turn["answer"] or "_(empty answer)_"))
        else:  # a pipe gets the text as written: no wrapping at 80 columns, no padding
            print(turn["answer"].strip() or "(empty answer)", flush=True)
        if turn["citations"]:
            cited = ", ".join(f"part {c['segment'] + 1} (chars {c['start']}-{c['end']})" for c in turn["citations"])
            self.out.print(Text(f"sources: {cited}  (/sources shows them)", style="cyan"), soft_wrap=True)
        calls = turn["calls"]
        tokens = sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls)
        seconds = sum(c["seconds"] for c in calls)
        self.out.print(Text(f"answered from {turn['answered_from']}: {turn['reason']}", style="dim"), soft_wrap=True)
        self.out.print(Text(f"{len(calls)} call(s), {tokens:,} tokens, {seconds:.1f} s", style="dim"), soft_wrap=True)

    # -- commands -------------------------------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Runs a /command; False when the session should end."""
        name, _, argument = line.strip().partition(" ")
        name = name.lower()
        if name in ("/quit", "/exit", "/q"):
            return False
        actions = {"/memory": self.show_memory, "/sources": self.show_sources, "/help": self.show_help,
                   "/reset": self.reset}
        if name == "/save":
            self.save(argument.strip())
        elif name in actions:
            actions[name]()
        else:
            note(self.err, f"unknown command {name}: /help lists the commands", "yellow")
        return True

    def show_help(self) -> None:
        table = Table(title="commands", title_justify="left", show_header=False)
        table.add_column("command", style="bold")
        table.add_column("what it does")
        for command, what in COMMANDS.items():
            table.add_row(command, what)
        table.add_row("anything else", "a question about the document")
        self.out.print(table)

    def show_memory(self) -> None:
        session = self.reader.session
        total = self.memory.count(session)
        shown = f", the {RECENT_ITEMS} most recent" if total > RECENT_ITEMS else ""
        recent = Table(title=f"memory of session {session}: {total} item(s){shown}", title_justify="left")
        for column in ("id", "kind", "tokens", "source"):
            recent.add_column(column, no_wrap=True)
        recent.add_column("text", ratio=1, min_width=24)
        for item in reversed(self.memory.items(session, last=RECENT_ITEMS)):
            source = ", ".join(f"part {s.segment + 1}" for s in item.spans[:3]) + ("…" if len(item.spans) > 3 else "")
            recent.add_row(str(item.id), item.kind, str(item.tokens), source, Text(_preview(item.brief)))
        self.out.print(recent)
        turns = self.turns()
        if not turns or not turns[-1]["activated"]:
            self.out.print(Text("activated: nothing yet (ask a question)", style="dim"))
            return
        last = turns[-1]
        activated = Table(title=f"activated for: {_preview(last['question'], 60)}", title_justify="left")
        for column in ("id", "kind", "score", "relevance", "recency", "keyword", "in prompt"):
            activated.add_column(column, no_wrap=True)
        activated.add_column("text", ratio=1, min_width=24)
        used = set(last["used"])
        for a in last["activated"]:
            activated.add_row(
                str(a["id"]), a["kind"] + (" (summary)" if a["summarized"] else ""), f"{a['score']:.3f}",
                f"{a['relevance']:.3f}", f"{a['recency']:.3f}", f"{a['keyword']:.3f}",
                "yes" if a["id"] in used else "no", Text(_preview(a["text"])),
            )
        self.out.print(activated)

    def show_sources(self) -> None:
        turns = self.turns()
        if not turns or not turns[-1]["citations"]:
            self.out.print(Text("no sources: the last answer cites no passage", style="dim"))
            return
        text = self.reader.document.text
        panels = []
        for c in turns[-1]["citations"]:
            passage = text[c["start"] : c["end"]].strip()
            if len(passage) > SOURCE_CHARS:
                passage = passage[:SOURCE_CHARS].rstrip() + " …"
            title = f"part {c['segment'] + 1}, chars {c['start']}-{c['end']}"
            panels.append(Panel(Text(passage), title=title, title_align="left"))
        self.out.print(Group(*panels))

    def save(self, target: str) -> None:
        if not target:
            note(self.err, "usage: /save FILE", "yellow")
            return
        path = Path(target).expanduser()
        if path.exists() and not self.confirm_overwrite(path):
            return
        try:
            path.write_text(transcript(self.reader, self.turns()), encoding="utf-8")
        except OSError as exc:
            note(self.err, f"cannot save to {path}: {exc.strerror or exc}", "red")
            return
        note(self.err, f"saved {len(self.turns())} turn(s) to {path}", "green")

    def confirm_overwrite(self, path: Path) -> bool:
        """An existing file is replaced only when the person says so (asked on a terminal; refused otherwise)."""
        if not sys.stdin.isatty():
            note(self.err, f"not saved: {path} exists (remove it or name another file)", "yellow")
            return False
        from rich.prompt import Confirm

        if Confirm.ask(f"{path} exists: overwrite it?", console=self.out, default=False):
            return True
        note(self.err, "not saved", "yellow")
        return False

    def reset(self) -> None:
        forgotten = self.memory.forget(self.reader.session, kinds=("question", "answer", "turn"))
        self.checkpointer.delete_thread(self.reader.session)
        note(self.err, f"conversation reset: history cleared, {forgotten} question/answer item(s) forgotten; "
                       "the notes of the document stay in memory", "green")


def turn_json(turn: Turn) -> dict[str, Any]:
    """One answer of `chat --json`: the question, the answer, where it came from, its citations and calls."""
    keys = ("question", "answer", "answered_from", "reason", "citations", "calls", "segments")
    data = {key: turn[key] for key in keys if key in turn}
    calls = turn.get("calls") or []
    data["usage"] = {
        "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
        "completion_tokens": sum(c["completion_tokens"] for c in calls),
        "cost_usd": sum(c.get("cost_usd", 0.0) for c in calls),
        "seconds": sum(c["seconds"] for c in calls),
    }
    return data


def transcript(reader: Reader, turns: list[Turn]) -> str:
    """The conversation as Markdown: each question, its answer, where it came from, and its cited passages."""
    lines = [f"# {reader.document.title or reader.document.source}", "",
             f"_longread chat, session `{reader.session}`, model {reader.model.name}, window {reader.window}._", ""]
    for i, turn in enumerate(turns, 1):
        lines += [f"## {i}. {turn['question']}", "", turn["answer"].strip() or "_(empty answer)_", "",
                  f"_Answered from {turn['answered_from']}: {turn['reason']}._", ""]
        for c in turn["citations"]:
            passage = " ".join(reader.document.text[c["start"] : c["end"]].split())
            if len(passage) > 300:
                passage = passage[:300] + " …"
            lines += [f"> part {c['segment'] + 1}, chars {c['start']}-{c['end']}: {passage}", ">"]
        if turn["citations"]:
            lines[-1] = ""
    return "\n".join(lines).rstrip() + "\n"


def _questions(out: Console, interactive: bool) -> Iterator[str]:
    """Lines typed at the prompt (Ctrl-C on an empty prompt only says how to leave), or stdin's lines."""
    if interactive:
        import readline  # noqa: F401  (line editing and history for input(), which rich's prompt uses)
    else:
        for line in sys.stdin:
            if line.strip():
                yield line.strip()
        return
    while True:
        try:
            line = out.input("[bold green]you>[/] ")
        except KeyboardInterrupt:
            out.print()
            note(out, "(Ctrl-D or /quit leaves the session)", "dim")
            continue
        except EOFError:
            out.print()
            return
        if line.strip():
            yield line.strip()


def open_reader(settings: ChatSettings, document: Document, model: ChatModel, stack: ExitStack) -> Reader:
    from ...memory import MemoryStream

    session = settings.session or default_session(document)
    folder = session_folder(settings.workspace, session)
    warning = memory_warning(folder)
    if warning and not settings.quiet:
        note(stderr_console(), warning, "yellow")
    stream = stack.enter_context(
        MemoryStream(folder / "memory.sqlite", embedder=embedder_for(model), tokenizer=model.tokenizer)
    )
    chain_checkpoints = stack.enter_context(open_checkpointer(checkpoints_path(settings.workspace), _warn(settings)))
    return Reader(document, model=model, window=settings.window, memory=stream, session=session,
                  checkpointer=chain_checkpoints, strategy=settings.strategy)


def _warn(settings: ChatSettings) -> Callable[[str], None]:
    return lambda message: None if settings.quiet else note(stderr_console(), message, "yellow")


def run_chat(settings: ChatSettings) -> int:
    """The whole session; returns the exit code."""
    out, err = Console(highlight=False), stderr_console()
    interactive = sys.stdin.isatty()
    try:
        with ExitStack() as stack:
            document = load_source(str(settings.path))
            model = backends.get_model(settings.model, kv=settings.kv, api_base=settings.api_base,
                                       timeout=settings.timeout)
            if settings.window and settings.window > model.context_window:
                raise LongreadError(f"--window {settings.window} is larger than the context window of {model.name} "
                                    f"({model.context_window})")
            reader = open_reader(settings, document, model, stack)
            folder = session_folder(settings.workspace, reader.session)
            history = stack.enter_context(open_checkpointer(folder / "chat.sqlite", _warn(settings)))
            label_threads(history, [reader.session], f"the turn history of session {reader.session}",
                          "the session goes on without its earlier turns (its memory is kept)")
            chat = ChatSession(reader, history, out, err,
                               as_json=settings.as_json, quiet=settings.quiet, stream=settings.stream)
            chat.note(f"longread chat: {document.title or document.source} | session {reader.session} | "
                        f"model {model.name} | window {reader.window}", "bold")
            try:
                chat.read_once()
            except KeyboardInterrupt:
                backends.stop_local_engines()
                note(err, "reading interrupted: run the same command again to resume it", "yellow")
                return EXIT_INTERRUPTED
            if interactive:
                chat.note("ask a question about the document; /help lists the commands", "dim")
            for line in _questions(out, interactive):
                if line.startswith("/"):
                    if not interactive and not settings.as_json:
                        out.print(Text(f"> {line}", style="bold"))
                    if not chat.command(line):
                        break
                    continue
                if not interactive and not settings.as_json:
                    out.print(Text(f"> {line}", style="bold"))
                turn = chat.ask(line)
                if turn is not None:
                    chat.render(turn)
                if not settings.as_json:
                    out.print()
    except sqlite3.Error as exc:  # a checkpoint that cannot be saved or read in the middle of the session
        note(err, f"error: the session cannot be saved in {settings.workspace} ({exc}); the session stops (what "
                  "was saved is kept)", "red")
        return 1
    except (LongreadError, ValueError, ImportError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, EmbedderMismatch):  # reembed=True is the library's way out; the CLI's is a new session
            reason += " (this session was written with another model's embedder: use another --session)"
        note(err, f"error: {reason}", "red")
        return 1
    return 0
