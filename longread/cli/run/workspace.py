"""The workspace of a run: checkpoint files opened with checks, and a lock per piece of work.

- `open_checkpointer(path, warn)`: LangGraph's SqliteSaver on a checked file, the one way the command line opens
  one (the runs' WORKSPACE/checkpoints.sqlite, a chat's chat.sqlite, `longread eval --checkpoints FILE`). A file
  that is not a SQLite database, or is damaged, is moved aside (`NAME.damaged-<time>`, with a warning) and a new
  one started: it only holds runs to resume, and the finished outputs live elsewhere. A file that cannot be
  written (a read-only folder or file) is a `WorkspaceError` before any call. One saver serves many threads
  (--jobs): it guards its connection with its own lock.
- `checkpoint_failure(exc, path)`: the one line for a checkpoint that could not be saved during a run. The run
  stops there: LangGraph saves each step before the next one starts (workflows/runs.py), so no call is spent that
  could not be kept, and a rerun resumes from the last saved step.
- `WorkLock`: one lock file per piece of work (the checkpoint threads of a document's run) under
  WORKSPACE/locks, so two runs on the same documents do not read the same one twice: the second finds it taken,
  goes on with the others and comes back to it at the end (by then it is finished, so nothing is read again).
  Beside it, a marker counts the calls started and not yet saved; a run that finds one left behind knows how many
  calls an interrupted run had paid for and it makes again (`repeated_calls` in the usage).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator

from ...errors import LongreadError

Warn = Callable[[str], None]
SQLITE_TIMEOUT_SECONDS = 30.0  # two runs share one checkpoints file: a writer waits for the other's step


class WorkspaceError(LongreadError):
    """The workspace cannot keep this run's checkpoints; the run stops before (or instead of) its next call."""


# -- checkpoint files -------------------------------------------------------------------------------------------------
def checkpoints_path(workspace: Path) -> Path:
    """WORKSPACE/checkpoints.sqlite: every worker step of every run of `ask`, `summarize` and a chat's reading."""
    return workspace / "checkpoints.sqlite"


def _probe(path: Path) -> None:
    """Raises sqlite3.DatabaseError for a file that is not a database or is damaged, OperationalError for one that
    cannot be written. Reads every page of both tables' b-trees (count(*)), which finds truncated files."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # page 1: "file is not a database"
        SqliteSaver(conn).setup()
        for table in ("checkpoints", "writes"):
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        conn.execute("BEGIN")
        try:
            conn.execute("DELETE FROM writes WHERE 0")  # needs the write lock: fails on a read-only file or folder
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def move_aside(path: Path) -> Path:
    """Renames a damaged SQLite file (and its -wal and -shm) to NAME.damaged-<time>; returns the new path."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):  # SQLite's side files belong to the damaged file
        with suppress(FileNotFoundError):
            os.replace(path.with_name(path.name + suffix), aside.with_name(aside.name + suffix))
    return aside


def check_checkpoint_file(path: Path, warn: Warn) -> None:
    """The checks of `open_checkpointer` (see the module docstring); raises WorkspaceError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ...documents import link_problem

        problem = next((f"{p} is {why}" for p in (path.parent, *path.parent.parents) if (why := link_problem(p))),
                       None)
        raise WorkspaceError(f"workspace {path.parent}: cannot create it ({problem or exc.strerror or exc})") from exc
    try:
        _probe(path)
        return
    except sqlite3.OperationalError as exc:
        raise WorkspaceError(f"{path}: cannot be written ({exc}); give --workspace a folder you can write") from exc
    except sqlite3.DatabaseError as exc:
        damage = str(exc)
    try:
        aside = move_aside(path)
        _probe(path)
    except (OSError, sqlite3.Error) as exc:
        raise WorkspaceError(f"{path}: damaged ({damage}) and cannot be replaced ({exc}); move it away") from exc
    warn(f"warning: {path} was damaged ({damage}); moved to {aside.name}, starting a new one (runs it held "
         "start over; finished outputs are kept)")


@contextmanager
def open_checkpointer(path: Path, warn: Warn = lambda message: None) -> Iterator[Any]:
    """LangGraph's SqliteSaver on a checked checkpoints file (WORKSPACE/checkpoints.sqlite, a chat's chat.sqlite).

    It tells observers (by checkpoint thread) each time a step is saved (see WorkLock)."""
    check_checkpoint_file(path, warn)
    saver_class = _observed_saver_class()
    # check_same_thread=False: the saver guards the connection with its own lock, and the async paths of the
    # graph touch it from worker threads.
    conn = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_SECONDS, check_same_thread=False)

    def damaged(what: str, lost: str, exc: BaseException) -> None:
        why = " ".join(str(exc).split())[:200]
        warn(f"warning: {path}: {what} cannot be read ({type(exc).__name__}{': ' + why if why else ''}); "
             f"dropped: {lost}")

    saver = saver_class(conn, damaged)
    try:
        yield saver
    finally:
        # Under the saver's lock: after Ctrl-C, a document still in flight on a daemon thread (--jobs) may be
        # saving a step, and SQLite must not close a connection in use (it crashes the process). Once closed, a
        # later save there raises sqlite3.ProgrammingError instead.
        with saver.lock:
            conn.close()


_SAVER_CLASS: Any = None


def _observed_saver_class() -> Any:
    global _SAVER_CLASS
    if _SAVER_CLASS is None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        class ObservedSaver(SqliteSaver):
            """A SqliteSaver that tells the observer of a thread each time a finished step's writes are saved (they
            are what a resumed run takes instead of running that step again).

            A thread whose rows SQLite reads but LangGraph cannot decode (a damaged blob, JSON that is not a
            checkpoint) is dropped and `on_damaged(what, lost, exc)` says so: that run starts over instead of
            failing every rerun. `labels` names threads for that line (see `label_threads`)."""

            def __init__(self, conn: sqlite3.Connection, on_damaged: Callable[[str, str, BaseException], None]):
                super().__init__(conn)
                self.observers: dict[str, Callable[[], None]] = {}
                self.labels: dict[str, tuple[str, str]] = {}
                self.on_damaged = on_damaged

            def get_tuple(self, config):  # type: ignore[no-untyped-def]
                try:
                    return _checked_shape(super().get_tuple(config))
                except sqlite3.Error:
                    raise  # the file itself: the caller stops the run (checkpoint_failure)
                except Exception as exc:  # noqa: BLE001 - any decoding failure of one thread's rows
                    thread = str(config.get("configurable", {}).get("thread_id"))
                    self.delete_thread(thread)
                    what, lost = self.labels.get(thread, (f"checkpoint thread {thread}", "that run starts over"))
                    self.on_damaged(what, lost, exc)
                    return None

            def put_writes(self, config, writes, task_id, task_path=""):  # type: ignore[no-untyped-def]
                super().put_writes(config, writes, task_id, task_path)
                observer = self.observers.get(str(config.get("configurable", {}).get("thread_id")))
                if observer is not None and writes:
                    observer()

        _SAVER_CLASS = ObservedSaver
    return _SAVER_CLASS


def _checked_shape(saved: Any) -> Any:
    """A decoded checkpoint tuple, or ValueError when what decoded is not a checkpoint (JSON of another shape)."""
    if saved is None:
        return None
    checkpoint, metadata = saved.checkpoint, saved.metadata
    maps = ("channel_values", "channel_versions", "versions_seen")
    if not isinstance(checkpoint, dict) or not all(isinstance(checkpoint.get(key), dict) for key in maps):
        raise ValueError(f"a {type(checkpoint).__name__} where a checkpoint should be")
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata that is a {type(metadata).__name__}, not a mapping")
    return saved


def label_threads(saver: Any, threads: list[str], what: str, lost: str) -> None:
    """Names `threads` for the line said if their saved state cannot be read: `what` cannot be read ...;
    dropped: `lost`. (Savers other than ours have no labels: nothing to do.)"""
    labels = getattr(saver, "labels", None)
    if isinstance(labels, dict):
        for thread in threads:
            labels[thread] = (what, lost)


def checkpoint_failure(exc: sqlite3.Error, path: Path) -> str:
    """The line for a checkpoint that could not be saved (or read) during a run."""
    reason = str(exc) or type(exc).__name__
    if "full" in reason:
        return (f"cannot save checkpoints in {path}: {reason}. The run stops here rather than pay for calls it "
                "cannot keep; free some space and run the same command again to resume from the last saved step")
    if isinstance(exc, sqlite3.OperationalError):
        return f"cannot save checkpoints in {path}: {reason}; the run stops (a rerun resumes from the last saved step)"
    return f"{path} is damaged ({reason}); the run stops: run it again to start a new checkpoints file"


# -- locks ------------------------------------------------------------------------------------------------------------
class WorkLock:
    """The lock of one piece of work (see the module docstring); `acquire` then `release`, on any thread."""

    def __init__(self, folder: Path, key: str, threads: list[str]):
        from filelock import FileLock

        self.path = folder / f"{key}.lock"
        self.marker = folder / f"{key}.calls"
        self.threads = threads
        self.repeated_calls = 0  # calls an interrupted run had started and not saved: this run makes them again
        self._unsaved = 0
        self._mutex = threading.Lock()
        # thread_local=False: this object's lock may be released on another thread than the one that took it
        # (two WorkLock objects of one key still exclude each other, threads of one process included).
        self._lock = FileLock(self.path, thread_local=False, on_acquired=self._write_pid)

    @staticmethod
    def _write_pid(fd: int) -> None:
        os.write(fd, str(os.getpid()).encode())

    def holder(self) -> str:
        """`pid N` of the run that holds the lock, if it said."""
        with suppress(OSError, ValueError):
            pid = self.path.read_text().strip()
            if pid.isdigit():
                return f"pid {pid}"
        return "another process"

    def acquire(self, *, wait: bool) -> bool:
        from filelock import Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return False
        self.repeated_calls = self._left_behind()
        return True

    def _left_behind(self) -> int:
        try:
            return max(int(json.loads(self.marker.read_text()).get("unsaved", 1)), 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, AttributeError):
            return 1  # a marker cut short by a kill: a call was started

    # -- what the run tells the lock --------------------------------------------------------------------------------
    def observe(self, saver: Any) -> None:
        """Follows the saves of this work's threads in `saver` (an ObservedSaver)."""
        for thread in self.threads:
            saver.observers[thread] = self.saved

    def call_started(self) -> None:
        with self._mutex:
            self._unsaved += 1
            with suppress(OSError):  # the marker only improves the usage figures of a later run
                self.marker.write_text(json.dumps({"unsaved": self._unsaved, "pid": os.getpid()}))

    def saved(self) -> None:
        """A step's writes were saved: its call will not be made again. (Counted, not reset: saves run on
        LangGraph's background threads, and may be told after the next call started.)"""
        with self._mutex:
            if self._unsaved:
                self._unsaved -= 1
                with suppress(OSError):
                    if self._unsaved:
                        self.marker.write_text(json.dumps({"unsaved": self._unsaved, "pid": os.getpid()}))
                    else:
                        self.marker.unlink()

    def release(self, saver: Any = None, *, keep_marker: bool = False) -> None:
        """Ends the work: the marker is kept when calls it counts may be lost (a failed save, an interruption)."""
        if saver is not None:
            for thread in self.threads:
                saver.observers.pop(thread, None)
        if not keep_marker:
            with suppress(OSError):
                self.marker.unlink()
        with suppress(OSError):
            # Unlinked while held: a contender that opened the old file finds it unlinked once it gets the lock and
            # opens a new one (filelock checks st_nlink), so the folder does not fill up with lock files.
            self.path.unlink()
        self._lock.release()


def lock_key(threads: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(threads)).encode()).hexdigest()[:32]
