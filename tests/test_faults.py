"""The fault suite: what longread promises when the API, the disk, a file or a name turns hostile (docs/reliability.md).

API faults come from a fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py) that litellm reaches as
`openai/NAME`; the rest runs on MockModels, which count every call. Documents are small and stalls short, so the
suite takes seconds.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import longread.backends
import longread.reader  # noqa: F401  (imported before any test patches backends.get_model, which it binds)
from longread.backends.litellm.model import LiteLLMModel
from longread.cli import app
from longread.testing import MockModel

from .fake_openai import FakeOpenAI, Request

REPO = Path(__file__).resolve().parents[1]
STORY = REPO / "examples" / "lighthouse_keeper.md"  # 4 segments at window 1024: 5 calls
LONGREAD = Path(sys.executable).parent / "longread"
KEY = "sk-fault-suite-0123456789abcdef"  # must never be written anywhere
AWS_SECRET = "aws-secret-fault-suite-9876543210"
REAL_CONNECT = sqlite3.connect  # (workspace.sqlite3 is the sqlite3 module: patching it patches this)
PARAGRAPH = "The keeper counted the boats each morning at dawn and wrote the number in a green book. " * 4


def text_of(paragraphs: int, tag: str = "") -> str:
    return "\n\n".join(f"Part {i}{tag}. {PARAGRAPH}" for i in range(paragraphs))


@pytest.fixture(autouse=True)
def isolated(cli_isolated, monkeypatch):
    monkeypatch.delenv("LONGREAD_TIMEOUT", raising=False)


def invoke(*args: object, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False, input=input)


def use(monkeypatch, model):
    monkeypatch.setattr(longread.backends, "get_model", lambda *args, **kwargs: model)
    return model


def against(monkeypatch, server: FakeOpenAI):
    """The real litellm backend, pointed at the fake server the way a user would (environment variables)."""
    monkeypatch.setenv("OPENAI_API_BASE", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


def assert_chain(answered: list[Request], workers: int) -> None:
    """Worker i received worker i-1's notes and nobody else's; the manager the last worker's: nothing lost or
    doubled. Each answer carries its own mark (note-<key>), so where it went shows in the later prompts."""
    assert len(answered) == workers + 1, [r.key for r in answered]
    assert len({r.key for r in answered}) == len(answered)  # no call answered twice
    for i, request in enumerate(answered):
        received = [j for j, other in enumerate(answered) if j != i and f"note-{other.key}" in request.prompt]
        assert received == ([i - 1] if i else []), (i, received)


def written_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


# -- the API misbehaves -------------------------------------------------------------------------------------------
def test_injected_api_faults_lose_and_double_no_note_and_no_key_is_written(tmp_path, monkeypatch):
    doc = tmp_path / "log.txt"
    doc.write_text(text_of(24))
    out = tmp_path / "out"
    with FakeOpenAI(fault_rate=0.3, seed=19, stall_seconds=0.6) as server:
        # Fast retries and a short timeout for the test; the CLI's own come from --timeout (tested below).
        use(monkeypatch, LiteLLMModel("openai/fake-model", api_base=server.url, api_key=KEY, retry_wait=0,
                                      timeout=0.3, max_retries=10))
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        result = invoke("summarize", doc, "--out", out, "--window", 512)
    assert result.exit_code == 0, result.output
    faults = [r.fault for r in server.log if r.fault]
    assert set(faults) == {"429", "500", "503", "drop", "stall"}, faults  # every kind met, every one survived
    data = json.loads((out / "log.txt.summary.json").read_text())
    assert_chain(server.answered(), data["segments"])
    assert len(data["calls"]) == len(server.answered())
    everything = written_bytes(tmp_path) + result.stdout.encode() + result.stderr.encode()
    assert KEY.encode() not in everything and AWS_SECRET.encode() not in everything


@pytest.mark.integration  # a real process, killed
def test_kill_9_at_a_random_call_then_resume_repeats_at_most_that_call(tmp_path):
    calls = 5  # the story at window 1024: 4 workers and the manager
    kill_at = random.Random().randint(1, calls)
    reached, release = threading.Event(), threading.Event()

    def hold(request: Request) -> None:
        if request.number == kill_at:
            reached.set()
            release.wait(30)  # the client is killed while it waits for this answer
            request.fault = "drop"  # which it never gets

    env = {**os.environ, "LONGREAD_WORKSPACE": str(tmp_path / "workspace"), "OPENAI_API_KEY": KEY,
           "NO_COLOR": "1", "LONGREAD_TIMEOUT": "30"}
    command = [str(LONGREAD), "summarize", str(STORY), "--out", str(tmp_path / "out"), "--model", "openai/fake-model",
               "--window", "1024"]
    with FakeOpenAI(on_request=hold) as server:
        env["OPENAI_API_BASE"] = server.url
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert reached.wait(90), first.communicate(timeout=5)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            release.set()
        before = list(server.log)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, (kill_at, second.stderr)
    after = server.log[len(before):]
    repeated = [r for r in after if r.key in {b.key for b in before}]
    assert [r.number for r in repeated] == [len(before) + 1] and repeated[0].key == before[-1].key, kill_at
    assert_chain([r for r in server.answered()], calls - 1)  # across both runs
    data = json.loads((tmp_path / "out" / "lighthouse_keeper.md.summary.json").read_text())
    assert data["usage"]["repeated_calls"] == 1, kill_at  # the lost call is in the usage
    assert "1 repeated after an interruption" in second.stderr
    assert not list((tmp_path / "workspace" / "locks").iterdir())  # the lock and its marker are gone


@pytest.mark.parametrize("status, error_type", [("404", "NotFoundError"), ("401", "AuthenticationError")])
def test_a_missing_model_or_a_rejected_key_stops_a_folder_run_at_its_first_call(tmp_path, monkeypatch, status,
                                                                                error_type):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_text(text_of(3, name))
    # The provider echoes what it was sent (OpenAI echoes the rejected key): none of it may be shown.
    with FakeOpenAI(fault_rate=1.0, faults=(status,), error_text=f"rejected {KEY}; debug {AWS_SECRET}") as server:
        against(monkeypatch, server)
        # Three documents read at once (--jobs 3): the first call goes alone, so the others never call.
        result = invoke("ask", folder, "What was counted?", "--model", "openai/fake-model", "--json", "--jobs", 3)
    assert result.exit_code == 1
    assert len(server.log) == 1  # not retried, and no other file tried
    assert json.loads(result.stdout.splitlines()[0])["error_type"] == error_type
    assert "the run stops" in result.stderr and result.stderr.count("\n") == 1
    assert KEY not in result.output and AWS_SECRET not in result.output


@pytest.mark.integration  # real time: a stall, a timeout, a backoff
def test_timeout_bounds_a_stalled_call_which_is_then_retried(tmp_path, monkeypatch):
    built: list[dict] = []
    real_get_model = longread.backends.get_model

    def recording(model, **options):
        built.append(options)
        return real_get_model(model, **options)

    monkeypatch.setattr(longread.backends, "get_model", recording)
    doc = tmp_path / "short.txt"
    doc.write_text(text_of(2))
    with FakeOpenAI(on_request=lambda r: setattr(r, "fault", "stall" if r.number == 1 else None),
                    stall_seconds=8.0) as server:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        result = invoke("ask", doc, "What was counted?", "--model", "openai/fake-model", "--api-base", server.url,
                        "--timeout", 0.3, "--json")
    assert result.exit_code == 0, result.output
    assert built[-1]["timeout"] == 0.3 and built[-1]["api_base"] == server.url  # both reach litellm
    stalled, retried = server.log[:2]
    assert stalled.fault == "stall" and retried.key == stalled.key and len(server.answered()) == 2
    # Given up after 0.3 s, then retried after the backoff (1-2 s), long before the server's 8 s were up.
    assert retried.at - stalled.at < 4.0
    monkeypatch.setenv("LONGREAD_TIMEOUT", "7.5")
    use_recorded = invoke("ask", doc, "What?", "--model", "mock", "--json")
    assert use_recorded.exit_code == 0 and built[-1]["timeout"] == 7.5


# -- the disk fails -------------------------------------------------------------------------------------------------
def fill_the_disk(monkeypatch, model: MockModel, spare_pages: int = 6) -> list[int]:
    """SQLite's own SQLITE_FULL on every checkpoints file opened from now on: it may not grow past a few pages more
    than it has. Returns a list that gets the number of model calls made when each save failed."""
    import longread.cli.run.workspace as workspace

    failures: list[int] = []

    def counted(method):
        def call(self, *args):
            try:
                return method(self, *args)
            except sqlite3.OperationalError:
                failures.append(len(model.calls))
                raise

        return call

    class Cursor(sqlite3.Cursor):
        execute = counted(sqlite3.Cursor.execute)
        executemany = counted(sqlite3.Cursor.executemany)

    class FullDisk(sqlite3.Connection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pages = super().execute("PRAGMA page_count").fetchone()[0]
            super().execute(f"PRAGMA max_page_count = {pages + spare_pages}")

        def cursor(self, factory=Cursor):
            return super().cursor(factory)

    monkeypatch.setattr(workspace.sqlite3, "connect", lambda *a, **k: REAL_CONNECT(*a, factory=FullDisk, **k))
    return failures


def free_the_disk(monkeypatch) -> None:
    import longread.cli.run.workspace as workspace

    monkeypatch.setattr(workspace.sqlite3, "connect", REAL_CONNECT)


def test_a_full_disk_stops_the_run_at_the_first_failed_save_and_a_rerun_resumes(tmp_path, monkeypatch):
    doc = tmp_path / "book.txt"
    doc.write_text(text_of(40))
    model = use(monkeypatch, MockModel(completion_tokens=24))
    first_failure = fill_the_disk(monkeypatch, model)
    full = invoke("summarize", doc, "--window", 512, "--out", tmp_path / "out")
    assert full.exit_code == 1
    assert first_failure and len(model.calls) == first_failure[0]  # no call after the first failed save
    [line] = full.stderr.splitlines()
    assert "database or disk is full" in line and "checkpoints.sqlite" in line and "resume" in line
    assert 2 <= len(model.calls) < 20  # it failed in the middle of the chain

    free_the_disk(monkeypatch)
    again = invoke("summarize", doc, "--window", 512, "--out", tmp_path / "out")
    assert again.exit_code == 0, again.output
    data = json.loads((tmp_path / "out" / "book.txt.summary.json").read_text())
    n = data["segments"] + 1
    assert len(data["calls"]) == n and [c["segment"] for c in data["calls"]] == [*range(n - 1), None]
    # Over both runs at most the call whose save failed is made twice; the usage counts exactly that many.
    assert len(model.calls) - n <= 1 and data["usage"].get("repeated_calls", 0) == len(model.calls) - n


def test_a_full_disk_under_jobs_stops_every_document_and_starts_no_other(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.txt").write_text(text_of(30, f" of book {i}"))
    model = use(monkeypatch, MockModel(completion_tokens=24))
    first_failure = fill_the_disk(monkeypatch, model, spare_pages=10)
    full = invoke("summarize", folder, "--window", 512, "--out", tmp_path / "out", "--jobs", 3)
    assert full.exit_code == 1 and "Traceback" not in full.output
    assert full.stderr.splitlines()[-1].startswith("error: cannot save checkpoints in ")
    # After the first failed save, each of the two other documents in flight finishes at most the call it had
    # started; none starts another, and no document starts.
    assert first_failure and len(model.calls) - first_failure[0] <= 2
    assert len({book for c in model.calls for book in re.findall(r"of book (\d)", c.prompt)}) <= 3
    assert not list((tmp_path / "out").glob("*.json"))


def test_a_document_in_flight_starts_no_call_once_another_has_stopped_the_run(tmp_path):
    from longread.cli.run.runner import FatalError, read_document
    from longread.cli.run.workspace import checkpoints_path, open_checkpointer
    from longread.cli.settings import resolve
    from longread.documents import load_document

    doc = tmp_path / "book.txt"
    doc.write_text(text_of(20))
    model = MockModel()
    settings = resolve("summarize", model="mock", window=512, kv=None, strategy="chain:notes=rewrite", workspace=tmp_path / "ws")
    with open_checkpointer(checkpoints_path(settings.workspace)) as checkpointer, \
            pytest.raises(FatalError, match="disk is full"):
        read_document(settings, None, load_document(doc), model, checkpointer,
                      stopped=lambda: "another document: disk is full" if len(model.calls) >= 2 else None)
    assert len(model.calls) == 2


def test_a_ray_task_that_cannot_save_its_checkpoints_stops_the_run_on_the_driver(tmp_path, monkeypatch):
    """The task's body and the driver's handling of its reply, without Ray (tests/test_ray.py runs Ray itself)."""
    from types import SimpleNamespace

    from longread.cli.run import cluster
    from longread.cli.run.runner import CHECKPOINT_ERROR, FatalError, Outcome
    from longread.cli.settings import resolve
    from longread.documents import load_document

    doc = tmp_path / "book.txt"
    doc.write_text(text_of(30))
    model = use(monkeypatch, MockModel())
    monkeypatch.setattr(cluster, "_MODELS", {})
    failures = fill_the_disk(monkeypatch, model)
    settings = resolve("summarize", model="mock", window=512, kv=None, strategy="chain:notes=rewrite", workspace=tmp_path / "ws")
    reply = cluster.read_task(settings, None, load_document(doc))
    assert reply["error_type"] == CHECKPOINT_ERROR and "database or disk is full" in reply["error"]
    assert failures and len(model.calls) == failures[0]  # the task made no call after the failed save

    stopped: list[str] = []
    run = SimpleNamespace(stop=lambda reason: stopped.append(reason) or FatalError(reason))
    with pytest.raises(FatalError, match="cannot save checkpoints"):
        cluster._collect(run, Outcome(None, "failed"), SimpleNamespace(get=lambda ref: reply), "ref")
    assert stopped == [reply["error"]]


def test_a_failed_summary_write_costs_no_call_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import longread.cli.run.outputs as outputs

    doc = tmp_path / "report.txt"
    doc.write_text(text_of(6))
    out = tmp_path / "out"
    out.mkdir()
    model = use(monkeypatch, MockModel())
    prefix = outputs._temporary_prefix(out / "report.txt.summary.md")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f"{prefix}{dead.stdout.strip()}-abc.tmp").write_text("left by a killed run")
    (out / f"{prefix}1-abc.tmp").write_text("a live process's (pid 1): not ours to remove")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    real_fsync = os.fsync
    monkeypatch.setattr(outputs.os, "fsync", disk_full)
    failed = invoke("summarize", doc, "--out", out, "--window", 1024)
    assert failed.exit_code == 1
    assert failed.stderr.splitlines() == [f"error: {doc}: cannot write {out / 'report.txt.summary.md'}: No space "
                                          "left on device"]
    calls = len(model.calls)
    assert calls > 1
    assert sorted(p.name for p in out.iterdir()) == [f"{prefix}1-abc.tmp"]  # the leftover of the dead pid is gone

    monkeypatch.setattr(outputs.os, "fsync", real_fsync)
    again = invoke("summarize", doc, "--out", out, "--window", 1024)
    assert again.exit_code == 0 and len(model.calls) == calls  # the finished chain was kept in its checkpoint
    assert (out / "report.txt.summary.json").is_file()


def test_debug_shows_the_traceback_that_a_plain_run_leaves_out(tmp_path, monkeypatch):
    import logging

    import longread.cli.run.outputs as outputs

    doc = tmp_path / "report.txt"
    doc.write_text(text_of(3))
    use(monkeypatch, MockModel())

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", disk_full)
    plain = invoke("summarize", doc, "--out", tmp_path / "out")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        debug = invoke("--debug", "summarize", doc, "--out", tmp_path / "out")
    finally:  # --debug routes every library's log to stderr: not for the tests after this one
        from longread.cli.settings import configure_logging

        root.handlers[:], root.level = handlers, level
        configure_logging(verbose=False, debug=False)  # and longread's own logger back to warnings
    assert plain.exit_code == debug.exit_code == 1
    assert "Traceback" not in plain.stderr and len(plain.stderr.splitlines()) == 1
    assert "Traceback" in debug.stderr and "No space left on device" in debug.stderr.splitlines()[-1]


def test_an_out_folder_that_cannot_be_written_fails_before_any_call(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(text_of(3))
    (folder / "sub" / "b.txt").write_text(text_of(3, "b"))
    model = use(monkeypatch, MockModel())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = invoke("summarize", folder, "--out", blocker / "out")
    assert result.exit_code == 1 and model.calls == []
    assert result.stderr.splitlines() == [f"error: --out {blocker / 'out'}: cannot write {blocker / 'out'}: "
                                          "Not a directory"]

    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where b.txt's summary folder would go")
    partly = invoke("summarize", folder, "--out", out, "--json")
    assert partly.exit_code == 1
    lines = [json.loads(line) for line in partly.stdout.splitlines()]
    assert [line.get("error", "") for line in lines] == ["", f"cannot write {out / 'sub'}: Not a directory"]
    assert {c.segment for c in model.calls} <= {0, None} and len(model.calls) == lines[0]["usage"]["calls"]


def test_a_redo_killed_between_its_two_files_is_redone_from_its_checkpoint(tmp_path, monkeypatch):
    doc = tmp_path / "report.txt"
    doc.write_text(text_of(8))
    out = tmp_path / "out"
    model = use(monkeypatch, MockModel())
    assert invoke("summarize", doc, "--out", out, "--window", 1024).exit_code == 0
    old_json = (out / "report.txt.summary.json").read_text()
    # A --force redo with other settings, killed after its Markdown was written and before its JSON:
    assert invoke("summarize", doc, "--out", out, "--window", 2048, "--force").exit_code == 0
    (out / "report.txt.summary.json").write_text(old_json)
    calls = len(model.calls)

    result = invoke("summarize", doc, "--out", out, "--window", 1024)
    assert result.exit_code == 0
    assert "redoing" in result.stderr and "not written together" in result.stderr
    assert len(model.calls) == calls  # the window-1024 chain was kept: written again without a call
    md, data = (out / "report.txt.summary.md").read_text(), json.loads((out / "report.txt.summary.json").read_text())
    assert data["window"] == 1024 and md.rstrip().endswith(f"<!-- longread write {data['write_id']} -->")
    assert "skipped" in invoke("summarize", doc, "--out", out, "--window", 1024).stderr


def test_summary_files_get_the_mode_the_umask_gives(tmp_path, monkeypatch):
    use(monkeypatch, MockModel())
    doc = tmp_path / "report.txt"
    doc.write_text(text_of(3))
    old = os.umask(0o027)
    try:
        assert invoke("summarize", doc, "--out", tmp_path / "out").exit_code == 0
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {0o640}


# -- damaged files ------------------------------------------------------------------------------------------------
def damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not a database " * 300)
    else:  # truncated: a real checkpoints file cut in half
        os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_checkpoints_file_is_moved_aside_and_the_run_goes_on(tmp_path, monkeypatch, how):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(text_of(8, str(i)))
    use(monkeypatch, MockModel())
    workspace = tmp_path / "workspace"
    assert invoke("ask", folder, "What was counted?", "--window", 512).exit_code == 0
    damage(workspace / "checkpoints.sqlite", how)
    for side in workspace.glob("checkpoints.sqlite-*"):
        side.unlink()

    result = invoke("ask", folder, "What was counted?", "--window", 512)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "checkpoints.sqlite was damaged" in warning and "moved to checkpoints.sqlite.damaged-" in warning
    assert result.stderr.count("done ") == 3
    assert len(list(workspace.glob("checkpoints.sqlite.damaged-*"))) == 1


def test_a_checkpoints_file_that_cannot_be_written_is_one_line_before_any_call(tmp_path, monkeypatch):
    import longread.cli.run.workspace as workspace

    doc = tmp_path / "a.txt"
    doc.write_text(text_of(3))
    model = use(monkeypatch, MockModel())
    assert invoke("ask", doc, "What?", "--window", 512).exit_code == 0
    calls = len(model.calls)
    real_connect = sqlite3.connect

    def read_only(path, *args, **kwargs):  # what a read-only file or folder gives (as root, chmod would not)
        return real_connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(workspace.sqlite3, "connect", read_only)
    result = invoke("ask", doc, "Another question?", "--window", 512)
    assert result.exit_code == 1 and len(model.calls) == calls
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "checkpoints.sqlite: cannot be written (attempt to write a readonly " \
        "database)" in line and "--workspace" in line


def eval_args(tmp_path: Path) -> list[object]:
    """`longread eval` of two small cases on the mock model, with --checkpoints tmp_path/eval.sqlite."""
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(json.dumps({"id": f"c{i}", "dataset": "toy", "question": "What was counted?",
                                         "text": text_of(6, str(i)), "answers": ["boats"]}) + "\n" for i in range(2)))
    return ["eval", cases, "-s", "chain", "-m", "mock", "--out", tmp_path / "r.jsonl", "--quiet",
            "--checkpoints", tmp_path / "eval.sqlite"]


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_eval_checkpoints_file_is_moved_aside_and_the_eval_goes_on(tmp_path, how):
    args = eval_args(tmp_path)
    assert invoke(*args, "-w", 512).exit_code == 0
    damage(tmp_path / "eval.sqlite", how)
    for side in tmp_path.glob("eval.sqlite-*"):
        side.unlink()

    result = invoke(*args, "-w", 1024)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "eval.sqlite was damaged" in warning and "moved to eval.sqlite.damaged-" in warning
    assert "2 run, 0 already done, of 2" in result.stderr
    assert len(list(tmp_path.glob("eval.sqlite.damaged-*"))) == 1


def test_an_eval_checkpoints_file_that_cannot_be_written_is_one_line_before_any_case(tmp_path, monkeypatch):
    import longread.cli.run.workspace as workspace

    args = eval_args(tmp_path)
    assert invoke(*args, "-w", 512).exit_code == 0

    def read_only(path, *args, **kwargs):  # what a read-only file or folder gives (as root, chmod would not)
        return REAL_CONNECT(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(workspace.sqlite3, "connect", read_only)
    result = invoke(*args, "-w", 1024)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "eval.sqlite: cannot be written (attempt to write a readonly" in line
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2  # only the first run's cases


def test_damaged_chat_files_and_an_empty_memory_file_are_said_and_the_session_goes_on(tmp_path, monkeypatch):
    from .test_reader_memory import scripted

    monkeypatch.setattr(longread.backends, "get_model",
                        lambda *a, **k: MockModel(completion_tokens=24, replies=scripted()))
    args = ["chat", STORY, "--window", 1024, "--session", "s1"]
    assert invoke(*args, input="Did the keeper see an otter?\n").exit_code == 0
    folder = tmp_path / "workspace" / "sessions" / "s1"
    damage(folder / "chat.sqlite", "garbage")
    (folder / "memory.sqlite").write_bytes(b"")
    for side in folder.glob("*.sqlite-*"):
        side.unlink()

    result = invoke(*args, input="Where is the lamp?\n")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "chat.sqlite was damaged" in result.stderr and "memory.sqlite is empty (0 bytes)" in result.stderr
    assert "> Where is the lamp?" in result.stdout


def test_a_memory_file_missing_from_a_session_with_a_history_is_said(tmp_path):
    from longread.cli.run.chat_session import memory_warning

    folder = tmp_path / "s1"
    folder.mkdir()
    assert memory_warning(folder) is None  # a new session: nothing to say
    (folder / "chat.sqlite").write_bytes(b"a history")
    assert "memory.sqlite is missing though the session has a history" in memory_warning(folder)
    (folder / "memory.sqlite").write_bytes(b"notes")
    assert memory_warning(folder) is None


def test_a_damaged_runs_log_is_replaced_and_runs_says_so_in_one_line(tmp_path, monkeypatch):
    use(monkeypatch, MockModel())
    doc = tmp_path / "a.txt"
    doc.write_text(text_of(3))
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    damage(workspace / "runs.sqlite", "garbage")
    listing = invoke("runs")
    assert listing.exit_code == 1 and listing.stderr.startswith("error: the runs log ")
    assert "file is not a database" in listing.stderr and listing.stderr.count("\n") == 1
    result = invoke("ask", doc, "What?")
    assert result.exit_code == 0 and "runs log" in result.stderr and "moved to runs.sqlite.damaged-" in result.stderr
    assert "a.txt" in invoke("runs").stdout


# -- hostile names and folders -----------------------------------------------------------------------------------
HOSTILE = {
    "csi": "red\x1b[31mtext\x1b[0m.txt",
    "osc": "title\x1b]0;owned\x07.txt",
    "newline": "two\nlines.txt",
    "bidi": "invoice\u202etxt.exe.txt",
    "c1": "eight\x9bbit.txt",
    "bytes": os.fsdecode(b"latin\xe9.txt"),
}
RAW = ("\x1b", "\x07", "\u202e", "\x9b", "\udce9")


def test_hostile_file_names_are_escaped_everywhere_they_are_printed(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(HOSTILE.values()):
        (folder / name).write_text(text_of(2, str(i)))
    (folder / "bad\x1b[2J.txt").write_bytes(b"")  # an empty file: its name goes to the failure table
    use(monkeypatch, MockModel())

    asked = invoke("ask", folder, "What was counted?")
    summed = invoke("summarize", folder, "--out", tmp_path / "out")
    as_json = invoke("ask", folder, "What was counted?", "--json")
    for result in (asked, summed, as_json):
        assert result.exit_code == 1  # the empty file
        for raw in RAW:
            assert raw not in result.stdout and raw not in result.stderr
    assert "two\\nlines.txt" in asked.stdout and "red\\x1b[31mtext" in asked.stderr
    assert "latin\\xe9.txt" in summed.stdout and "bad\\x1b[2J.txt" in summed.stderr
    assert len(summed.stdout.splitlines()) == len(HOSTILE)  # one line per summary file, whatever its name
    sources = {json.loads(line)["source"] for line in as_json.stdout.splitlines()}
    assert sources == {str(folder / name) for name in [*HOSTILE.values(), "bad\x1b[2J.txt"]}  # JSON keeps them


def test_the_progress_line_escapes_a_hostile_name():
    from rich.console import Console

    from longread.cli.display.console import Display

    display = Display(Console(force_terminal=True, width=200), 1)
    line = display.document(HOSTILE["osc"] + HOSTILE["newline"])
    assert line.description().startswith("title\\x1b]0;owned\\x07.txttwo\\nlines.txt")


def test_symlink_loops_inside_a_folder_or_given_as_the_file_are_one_line_each(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    (folder / "deep").mkdir(parents=True)
    (folder / "good.txt").write_text(text_of(2))
    os.symlink("self.txt", folder / "self.txt")
    os.symlink("pong.txt", folder / "ping.txt")
    os.symlink("ping.txt", folder / "pong.txt")
    os.symlink("..", folder / "deep" / "up")  # a folder loop: not followed
    os.symlink("nowhere.txt", folder / "broken.txt")
    use(monkeypatch, MockModel())

    result = invoke("summarize", folder, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (tmp_path / "out" / "good.txt.summary.md").is_file()
    errors = {Path(o["source"]).name: o["error"] for o in map(json.loads, result.stdout.splitlines()) if "error" in o}
    loop = "a symbolic link loop (the link leads back to itself)"
    assert errors == {"self.txt": loop, "ping.txt": loop, "pong.txt": loop,
                      "broken.txt": "a broken symbolic link (to nowhere.txt, which does not exist)"}

    alone = invoke("summarize", folder / "self.txt")
    assert alone.stderr.splitlines() == [f"error: {folder / 'self.txt'}: a symbolic link loop (the link leads back "
                                         "to itself)"]


def test_a_symlink_loop_as_out_or_as_the_workspace_is_one_line_before_any_call(tmp_path, monkeypatch):
    doc = tmp_path / "a.txt"
    doc.write_text(text_of(2))
    model = use(monkeypatch, MockModel())
    os.symlink("loop", tmp_path / "loop")
    loop = "a symbolic link loop (the link leads back to itself)"
    out = invoke("summarize", doc, "--out", tmp_path / "loop")
    deeper = invoke("summarize", doc, "--out", tmp_path / "loop" / "sub")
    workspace = invoke("ask", doc, "What?", "--workspace", tmp_path / "loop")
    assert out.stderr.splitlines() == [f"error: --out {tmp_path / 'loop'}: cannot write {tmp_path / 'loop'}: {loop}"]
    assert deeper.stderr.splitlines() == [f"error: --out {tmp_path / 'loop' / 'sub'}: cannot write "
                                          f"{tmp_path / 'loop' / 'sub'}: {tmp_path / 'loop'} is {loop}"]
    assert workspace.stderr.splitlines() == [f"error: workspace {tmp_path / 'loop'}: cannot create it "
                                             f"({tmp_path / 'loop'} is {loop})"]
    assert out.exit_code == deeper.exit_code == workspace.exit_code == 1 and model.calls == []


def test_an_unreadable_subfolder_is_listed_among_the_failures(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    (folder / "good.txt").write_text(text_of(2))
    real_scandir = os.scandir

    def scandir(path="."):  # permission denied (as root, chmod 000 would not stop it)
        if isinstance(path, (str, os.PathLike)) and Path(path) == folder / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    use(monkeypatch, MockModel())
    result = invoke("ask", folder, "What?", "--json")
    assert result.exit_code == 1
    errors = [json.loads(line) for line in result.stdout.splitlines() if "error" in json.loads(line)]
    assert errors == [{"source": str(folder / "locked"), "error": "cannot list this folder: Permission denied",
                       "error_type": "DocumentError"}]


# -- two runs at once ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("jobs", [1, 2])
def test_two_runs_on_the_same_folder_read_each_document_once(tmp_path, monkeypatch, jobs):
    from longread.cli.run.runner import run
    from longread.cli.settings import resolve

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(text_of(6, str(i)))

    def slow(messages):
        time.sleep(0.01)  # long enough for the two runs to meet on every document
        return None

    model = use(monkeypatch, MockModel(responder=slow))
    settings = resolve("summarize", model="mock", window=512, kv=None, strategy="chain:notes=rewrite", workspace=tmp_path / "ws",
                       quiet=True, writes_files=True, jobs=jobs)
    codes: list[int] = []
    runs = [threading.Thread(target=lambda: codes.append(run([str(folder)], None, settings, tmp_path / "out")))
            for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(60)
    assert codes == [0, 0]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert len(summaries) == 4
    assert len(model.calls) == sum(len(s["calls"]) for s in summaries)  # not one call made twice


def test_a_document_another_run_is_reading_is_waited_for_and_not_read_again(tmp_path, monkeypatch):
    from longread import Reader
    from longread.cli.run.workspace import WorkLock, lock_key

    doc = tmp_path / "a.txt"
    doc.write_text(text_of(6))
    model = use(monkeypatch, MockModel())
    threads = Reader(str(doc), model=model, window=512, strategy="chain:notes=rewrite").thread_ids(None)
    other = WorkLock(tmp_path / "workspace" / "locks", lock_key(threads), threads)
    held = threading.Event()

    def another_run() -> None:  # holds the document's lock for half a second, then lets go
        assert other.acquire(wait=False)
        held.set()
        time.sleep(0.5)
        other.release()

    threading.Thread(target=another_run).start()
    assert held.wait(10)

    result = invoke("summarize", doc, "--window", 512)
    assert result.exit_code == 0
    assert f"waiting for the other longread run (pid {os.getpid()}) to finish {doc}" in result.stderr
    assert len(model.calls) > 0


# -- the smaller items ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_read_as_text_and_binary_stays_binary(tmp_path, codec):
    from longread.documents import load_document

    text = "Grüße aus Köln. The keeper counted the boats at dawn.\n" * 20
    (tmp_path / "letter.txt").write_bytes(text.encode(codec))
    doc = load_document(tmp_path / "letter.txt")
    assert doc.text == text and doc.metadata["encoding"] == codec
    noise = bytes(random.Random(7).randrange(256) for _ in range(4096)) + b"\x00" * 8
    (tmp_path / "noise.txt").write_bytes(noise)
    result = invoke("ask", tmp_path / "noise.txt", "What?", "--model", "mock")
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'noise.txt'}: binary file (contains NUL bytes), not "
                                          "text"]


def test_an_epub_whose_reading_order_names_a_missing_chapter_says_so(tmp_path):
    import zipfile

    from longread.documents import load_document

    from .test_documents import make_epub

    def with_ghost(name: str, chapters: list) -> Path:
        made = make_epub(tmp_path / f"made-{name}", chapters)
        target = tmp_path / name
        with zipfile.ZipFile(made) as source, zipfile.ZipFile(target, "w") as copy:
            for item in source.infolist():
                data = source.read(item)
                if item.filename.endswith(".opf"):
                    data = data.replace(b'<itemref idref="nav"/>', b'<itemref idref="nav"/><itemref idref="ghost"/>')
                copy.writestr(item, data)
        return target

    only_ghost = with_ghost("hollow.epub", [("a.xhtml", "A", "<div><img src='x.png'/></div>")])
    result = invoke("ask", only_ghost, "What?", "--model", "mock")
    assert result.stderr.splitlines() == [f"error: {only_ghost}: corrupt EPUB (its reading order names 'ghost', "
                                          "missing from its manifest)"]
    partly = with_ghost("partly.epub", [("a.xhtml", "A", "<p>The keeper counted the boats at dawn.</p>")])
    assert "counted the boats" in load_document(partly).text
    read = invoke("ask", partly, "What?", "--model", "mock")
    assert read.exit_code == 0
    [warning] = [line for line in read.stderr.splitlines() if "ghost" in line]
    assert "its reading order names 'ghost', missing from its manifest; read without them" in warning


def test_the_latin1_warning_is_one_line_without_python_source(tmp_path, monkeypatch):
    use(monkeypatch, MockModel())
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes("café naïve: the keeper counted the boats.\n".encode("latin-1"))
    result = invoke("ask", legacy, "What?")
    assert result.exit_code == 0
    [warning] = [line for line in result.stderr.splitlines() if "latin-1" in line]
    assert warning.startswith(f"warning: {legacy}: not valid UTF-8")
    assert "warnings.warn" not in result.stderr and ".py:" not in result.stderr


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DB_PASSWORD", "PGPASSWORD",
                                  "AZURE_OPENAI_API_KEY", "HF_TOKEN", "GITHUB_PAT_TOKEN", "MY_CREDENTIALS",
                                  "SMTP_PASSWD", "OPENAIKEY", "client_secret"])
def test_secret_scrubbing_covers_every_name_that_holds_a_credential(name):
    from longread.backends.litellm.model import scrub, secret_env_values

    value = "s3cr3t-value-0123456789"
    environ = {name: value, "HOME": "/home/ada-lovelace", "USE_KEY": "true", "TERM": "xterm-256color"}
    assert secret_env_values(environ) == [value]  # and not the ordinary settings beside it
    assert scrub(f"provider said: bad credential {value}", secret_env_values(environ)) == \
        "provider said: bad credential ***"
