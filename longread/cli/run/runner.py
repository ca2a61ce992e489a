"""The run of `ask` and `summarize`: checks before any call, then each document read, written and reported.

    run(specs, question, settings, out) -> exit code

1. `preflight`: the model string resolves and its key is set (or a dry run needs none), the strategy exists,
   --window fits the model: one clear line and exit 1 before any document is read. `--out` is checked writable
   before the first call too.
2. `collect_jobs`: the documents; those that cannot even be listed are failures from the start.
3. For each document, `read_one` returns an `Outcome` (done, skipped, failed, busy) and `report` prints it, logs
   it in the runs log and counts it on the display. `read_one` touches only its own document's files and progress
   line, so several can run at once: the run's executor hands back the outcomes in the documents' order and
   `report` runs on the main thread. The executor is given to `run` (executors.py picks it): with `--jobs N` a pool
   of threads calls `read_one` (parallel.py); with `--ray` the reading itself (`read_document`) runs as a Ray task
   between `prepare` and `finish`, which stay here (cluster.py).
4. An authentication error (or a model the provider does not have) stops the whole run: every other document
   would fail the same way. So does a checkpoint that cannot be saved (a full disk, a damaged or read-only
   checkpoints file): the run stops at the first failed save instead of paying for calls it cannot keep. Once
   one document has met such an error, no other document starts (`Run.stop`).
5. Before its first call a document takes the lock of its work (workspace.WorkLock) and keeps it until its
   outputs are written: a document another run is reading is put off and read last, by when it is finished
   (nothing is read twice; a Ray task waits for the lock instead). The document's summary folder is checked writable before any call; a finished chain stays in
   its checkpoint, so an output that could not be written costs no call on the rerun.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from ... import backends
from ..display.console import Display, DocumentProgress, TextStream, failures_table, note, stderr_console
from ...errors import LongreadError, ModelError
from .jobs import Failure, Job, collect_jobs, failure_of, one_line
from .outputs import OutputError, OutputFolder, OutputSettings, SummaryFiles, prompts_fingerprint, summary_markdown
from .parallel import in_threads
from ..display.printing import Printer, done_line
from ..settings import DEFAULT_MODEL, Settings, fitted_window
from .workspace import (WorkLock, WorkspaceError, checkpoint_failure, checkpoints_path, label_threads, lock_key,
                        move_aside, open_checkpointer)

EXIT_INTERRUPTED = 130
# Failures every other document would meet too: the run stops at the first one.
RUN_STOPPING_ERRORS = {
    "AuthenticationError": "the key was rejected",
    "PermissionDeniedError": "the key was rejected",
    "NotFoundError": "the provider does not have this model",
    "ConnectionRefusedError": "nothing is listening at that address",
}
CHECKPOINT_ERROR = "CheckpointError"  # the error_type of a checkpoint that could not be saved (a Ray task's reply)


# Said after every answer of the embedded model: a first answer that is wrong should not look authoritative.
SMALL_MODEL_NOTE = ("note: this came from the embedded SmolLM2-135M, a very small model whose answers are often "
                    "wrong; `longread models pull qwen2.5-coder-1.5b` fetches a better one (once; offline after), "
                    "then --model qwen2.5-coder-1.5b")


def answered(run: "Run") -> bool:
    return run.answered > 0 and not run.settings.dry_run


class FatalError(Exception):
    """Stops the whole run (the model cannot run, the workspace cannot be opened, a rejected key)."""


# -- before any document ----------------------------------------------------------------------------------------------
def preflight(settings: Settings) -> None:
    """What would make every document fail, found before the first one is read (no call, no model loaded)."""
    from ...workflows.registry import available_strategies

    if settings.api_base and backends.backend_for(settings.model).name != "litellm":
        raise FatalError(f"--api-base {settings.api_base}: {settings.model} runs in this process; --api-base names "
                         "the server of an API model (--model openai/NAME or hosted_vllm/NAME)")
    try:
        # A server of one's own (--api-base) may take no key; one that wants one answers 401, which stops the run.
        backends.check_model(settings.model, need_key=not settings.dry_run and not settings.api_base)
    except ModelError as exc:
        raise FatalError(_with_alias(settings, str(exc))) from exc
    name = settings.strategy.split(":", 1)[0]
    names = list(available_strategies())
    if name not in names:
        raise FatalError(f"--strategy {settings.strategy}: unknown strategy (choose one of {', '.join(names)})")
    _check_strategy_options(settings.strategy)


def _check_strategy_options(spec: str) -> None:
    """An option the strategy refuses fails once here, not once per document (the strategy is only built)."""
    from ...workflows import get_strategy

    try:
        get_strategy(spec)
    except LongreadError as exc:  # StrategyError, or a plugin that cannot be imported
        reason = str(exc).removeprefix(f"strategy {spec!r}: ")
        raise FatalError(f"--strategy {spec}: {one_line(reason)}") from exc


def _tracer(settings: Settings, stack: ExitStack) -> Any:
    """--trace-otel: the run's tracer, its spans sent when the run ends (FatalError without the `otel` extra)."""
    if not settings.trace_otel or settings.dry_run:
        return None
    from ...tracing import TracingUnavailable, configure

    try:
        export = configure()
    except TracingUnavailable as exc:
        raise FatalError(str(exc)) from None
    stack.callback(export.shutdown)
    return export.tracer()


def _with_alias(settings: Settings, message: str) -> str:
    return f"{message} (alias {settings.alias})" if settings.alias else message


@dataclass
class Resources:
    """The model and the checkpointer, made on first need: a run whose documents are all done loads nothing."""

    settings: Settings
    stack: ExitStack
    warn: Callable[[str], None] = lambda message: None
    tracer: Any = None  # --trace-otel: the run's OpenTelemetry tracer
    _model: Any = None
    _checkpointer: Any = None
    _speed: Any = None
    # Documents read in threads (--jobs) ask for the model at once: it is built once.
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._build()
            return self._model

    def _build(self) -> Any:
        settings = self.settings
        try:
            model = backends.get_model(settings.model, **settings.model_options())
        except (LongreadError, ValueError, ImportError, OSError) as exc:
            raise FatalError(_with_alias(settings, f"--model {settings.model}: {one_line(str(exc))}")) from exc
        if settings.window and settings.window > model.context_window:
            given = (f"window {settings.window} (from {settings.window_source})" if settings.window_source
                     else f"--window {settings.window}")
            raise FatalError(f"{given} is larger than the context window of {model.name} ({model.context_window})")
        if settings.dry_run:
            from ...backends.estimate import estimate_model

            return estimate_model(model)
        return client_model(settings, model, self.tracer)

    def speed(self) -> Any:
        """A dry run of a local model: its measured speed on this machine (one short real call, once a run)."""
        with self._lock:
            if self._speed is None:
                from ...backends.estimate import calibrate

                self._speed = calibrate(self.model().counter)
            return self._speed

    def checkpointer(self) -> Any:
        if self.settings.dry_run:
            return None  # a dry run leaves nothing behind
        with self._lock:
            if self._checkpointer is None:
                locks = self.settings.workspace / "locks"
                try:
                    self._checkpointer = self.stack.enter_context(
                        open_checkpointer(checkpoints_path(self.settings.workspace), self.warn))
                    locks.mkdir(exist_ok=True)  # read_document's locks: a run that cannot take them stops here
                except WorkspaceError as exc:
                    raise FatalError(str(exc)) from exc
                except OSError as exc:
                    raise FatalError(f"workspace {self.settings.workspace}: cannot create {locks} "
                                     f"({exc.strerror or exc})") from exc
            return self._checkpointer


def client_model(settings: Settings, model: Any, tracer: Any = None) -> Any:
    """The model behind the completion cache (--cache) and tracing (--trace-otel, with the run's tracer)."""
    if settings.cache:
        from ...backends.cache import CACHE_FILE, CachedModel

        model = CachedModel(model, settings.workspace / CACHE_FILE)
    if tracer is not None:
        from ...tracing import TracedModel

        model = TracedModel(model, tracer)
    return model


# -- one document -----------------------------------------------------------------------------------------------------
class Busy(Exception):
    """Another run holds the lock of this document's work (`holder` says who)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def read_document(settings: Settings, question: str | None, document: Any, model: Any, checkpointer: Any, *,
                  on_event: Any = None, on_text: Any = None, wait: bool = True, fresh: bool | None = None,
                  stopped: Callable[[], str | None] | None = None, done_meanwhile: Callable[[], bool] | None = None,
                  then: Callable[[Any, int], None] | None = None,
                  output_lock: WorkLock | None = None) -> tuple[Any, int]:
    """The reading of one document with the run's strategy and checkpoints -> (Result, repeated calls). Runs in
    this process or in a Ray task (cluster.py), so it depends on nothing but its arguments.

    With a checkpointer it holds the lock of the document's work while it reads (waiting for another run that holds
    it, or with `wait=False` raising Busy), and counts the calls it starts, so that a run resuming one that was
    killed knows how many calls it makes again (the second value; `usage.repeated_calls` in the outputs).
    `fresh` (default: --force) starts over. A checkpoint that cannot be saved raises sqlite3.Error: the caller
    stops the run. `stopped()`, asked before each call, says why the run stopped (another document's failure):
    then the call is not made (FatalError). `done_meanwhile()`, asked once the lock is held, says the document was
    finished by the run that held it (then nothing is read: (None, 0)); `then(result, repeated)` runs before the
    lock is let go (the outputs are written under it, so two runs never write one document's files at once).
    `output_lock`, the lock of the document's summary files (under --out), is taken first the same way: runs with
    different workspaces share no work lock, but one --out folder."""
    from ...reader import Reader

    reader = Reader(document, model=model, window=settings.window, checkpointer=checkpointer,
                    strategy=settings.strategy)
    lock: WorkLock | None = None
    output_lock = output_lock if checkpointer is not None else None
    if checkpointer is not None:
        threads = reader.thread_ids(question)
        lock = WorkLock(settings.workspace / "locks", lock_key(threads), threads)
        label_threads(checkpointer, threads, f"the saved reading of {document.source}",
                      "that document is read again from its start")
        _acquire(output_lock, lock, wait)
        try:
            finished = done_meanwhile is not None and done_meanwhile()
        except BaseException:
            _release(lock, output_lock)
            raise
        if finished:
            _release(lock, output_lock)
            return None, 0
        lock.observe(checkpointer)
    started = 0

    def counted(event: Any) -> None:
        nonlocal started
        if getattr(event, "kind", None) == "call_started":
            reason = stopped() if stopped is not None else None
            if reason is not None:
                raise FatalError(reason)
            started += 1
            if lock is not None:
                lock.call_started()
        if on_event is not None:
            on_event(event)

    clean = False  # False: calls this run started may be lost; the lock's marker keeps their count
    try:
        if (settings.force if fresh is None else fresh) and checkpointer is not None:
            reader.forget(question)  # start over instead of resuming
        if question is not None:
            result = reader.ask(question, schema=settings.schema, on_event=counted, on_text=on_text)
        else:
            result = reader.summarize(on_event=counted, on_text=on_text)
        repeated = lock.repeated_calls if lock is not None and started else 0
        if then is not None:
            then(result, repeated)
        clean = True
    except (LongreadError, OSError):
        clean = True  # a failed call was not paid for, or is the document's own failure: nothing to repeat
        raise
    finally:
        if lock is not None:
            _release(lock, output_lock, checkpointer, keep_marker=not clean)
    return result, repeated


def _acquire(output_lock: WorkLock | None, lock: WorkLock, wait: bool) -> None:
    """The summary files' lock, then the work's (always in this order, so two runs cannot each hold one and wait
    for the other); Busy when either is held and `wait` is False."""
    if output_lock is not None and not output_lock.acquire(wait=wait):
        raise Busy(output_lock.holder())
    if not lock.acquire(wait=wait):
        if output_lock is not None:
            output_lock.release()
        raise Busy(lock.holder())


def _release(lock: WorkLock, output_lock: WorkLock | None, saver: Any = None, *, keep_marker: bool = False) -> None:
    try:
        lock.release(saver, keep_marker=keep_marker)
    finally:
        if output_lock is not None:
            output_lock.release()


@dataclass
class Outcome:
    job: Job
    # done | skipped | failed | busy (another run holds its lock: read it last) | stopped (not started: the run stopped)
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    files: SummaryFiles | None = None
    failure: Failure | None = None
    estimate: Any = None
    stream: TextStream | None = None
    line: DocumentProgress | None = None
    started: float = 0.0
    seconds: float = 0.0
    error_type: str = ""
    holder: str = ""  # busy: who holds the lock


@dataclass
class Run:
    settings: Settings
    question: str | None
    display: Display
    printer: Printer
    resources: Resources
    outputs: OutputFolder | None
    output_settings: OutputSettings
    # Set by the first failure that stops the run (a rejected key, a checkpoint that cannot be saved): documents
    # that would start after it do not (--jobs reads others in threads meanwhile).
    stop_reason: str | None = None
    # The first document to call the model goes alone until one of its calls is answered: a rejected key or a
    # model the provider does not have then costs one failed call, not one per document in flight (--jobs).
    _first_answer: threading.Event = field(default_factory=threading.Event)
    _first_taken: bool = False
    _first_lock: threading.Lock = field(default_factory=threading.Lock)
    _writing: threading.Lock = field(default_factory=threading.Lock)  # held while a document's outputs are written
    answered: int = 0  # documents read and reported in this run

    def read_one(self, job: Job, *, wait: bool = False) -> Outcome:
        """Reads one document (or finds it done); never raises for that document's own failures.

        A document whose work another run holds is `busy` (with `wait`, it waits for that run to finish first).
        Raises FatalError when the run must stop (a checkpoint that cannot be saved, the model cannot load); a
        document that would start after another one stopped the run is `stopped` (not reported: the document that
        stopped the run is, in its turn)."""
        outcome = Outcome(job, "failed", started=time.time())
        if self.stop_reason is not None:
            outcome.kind = "stopped"
            return outcome
        clock = time.monotonic()
        first = False
        try:
            document = self.prepare(outcome, quiet=wait)
            if document is not None:
                first = self._wait_for_first_answer()
                if self.stop_reason is not None:
                    outcome.kind = "stopped"
                    return outcome
                checkpointer = self.resources.checkpointer()  # the workspace is checked before the model loads
                model = self.resources.model()
                line = outcome.line = self.display.document(job.name, self.mode)
                stream = outcome.stream = self.printer.stream_for(job)
                line.set_phase("reading")
                on_event = self._opening(line.on_event) if first else line.on_event
                files = outcome.files

                def done_meanwhile() -> bool:
                    # Once the locks are held: another run may have written them since prepare() looked (after
                    # we waited for it, or a run of another workspace that finished just before we took them).
                    return (files is not None and not self.settings.force
                            and self._up_to_date(outcome, files, quiet=True))

                read_document(self.settings, self.question, document, model, checkpointer, on_event=on_event,
                              on_text=stream, wait=wait, fresh=self.settings.force and not wait,
                              stopped=lambda: self.stop_reason, done_meanwhile=done_meanwhile,
                              then=lambda result, repeated: self.finish(outcome, result, model, repeated),
                              output_lock=files.lock() if files is not None else None)
        except Busy as busy:
            self.display.drop(outcome.line)
            outcome.kind, outcome.holder, outcome.line, outcome.stream = "busy", busy.holder, None, None
        except sqlite3.Error as exc:  # a checkpoint that cannot be saved or read: no later call could be kept
            if self.settings.debug:
                traceback.print_exc()
            raise self.stop(checkpoint_failure(exc, checkpoints_path(self.settings.workspace))) from exc
        # OSError: an output that cannot be written (disk full, name too long) fails that document alone.
        except (LongreadError, OSError) as exc:
            self.failed(outcome, exc)
        finally:
            outcome.seconds = time.monotonic() - clock
            self.display.retire(outcome.line)  # read: its line leaves the display, it is counted when reported
            if first:  # after failed(): a document waiting for it sees the run stopped
                self._first_answer.set()
        return outcome

    def _wait_for_first_answer(self) -> bool:
        """True for the first document to read (it opens the way); the others wait here until it has had an
        answer or has finished, then go on unless the run stopped."""
        with self._first_lock:
            first, self._first_taken = not self._first_taken, True
        if not first:
            while not self._first_answer.wait(0.2):  # a timed wait: Ctrl-C still reaches the main thread
                pass
        return first

    def _opening(self, on_event: Any) -> Any:
        def opening(event: Any) -> None:
            if getattr(event, "kind", None) == "call_finished":
                self._first_answer.set()
            on_event(event)

        return opening

    def stop(self, reason: str) -> FatalError:
        """Marks the run stopped (no document starts after this); the FatalError to raise."""
        if self.stop_reason is None:
            self.stop_reason = reason
        return FatalError(reason)

    def interrupt(self) -> None:
        """Ctrl-C: no call starts and no output is written after this (a write under way finishes first), so what
        the run leaves is what it reported, give or take the documents it was writing."""
        with self._writing:
            self.stop("interrupted")

    def check_stopped(self) -> None:
        if self.stop_reason is not None:
            raise FatalError(self.stop_reason)

    @property
    def mode(self) -> str:
        return "summary" if self.question is None else "query"

    def prepare(self, outcome: Outcome, *, quiet: bool = False) -> Any:
        """The document to read, or None when it is done already (the outcome is then `skipped`). A bad file
        raises its DocumentError here, and a summary folder that cannot be written its OutputError, before any
        model is loaded or called."""
        settings, job = self.settings, outcome.job
        files = self.outputs.files_for(job) if self.outputs else None
        outcome.files = files
        if files is not None and not settings.force and self._up_to_date(outcome, files, quiet=quiet):
            return None
        if files is not None and not settings.dry_run:
            files.prepare()  # a folder that cannot be written fails now, before any call
        return job.load()

    def _up_to_date(self, outcome: Outcome, files: SummaryFiles, *, quiet: bool) -> bool:
        """Whether the document's summary files are finished and made with these settings (then it is skipped);
        when they are there but not, the progress says why it is redone."""
        if not files.finished():
            return False
        stored = files.stored()
        changes = self.output_settings.differences(stored.get("settings")) if stored is not None else None
        if stored is not None and not changes:
            outcome.kind, outcome.data = "skipped", stored
            return True
        if not (self.settings.quiet or quiet):
            why = (f"its summary was made with other settings ({'; '.join(changes)})" if changes else
                   "its .md and .json were not written together (a run stopped between them)")
            self.display.note(f"redoing {outcome.job.name}: {why}")
        return False

    def finish(self, outcome: Outcome, result: Any, model: Any = None, repeated_calls: int = 0) -> None:
        """A read document's data, written under --out (or its dry-run estimate): the outcome is `done`.
        `repeated_calls`: calls an interrupted run had started and this one made again (in the usage)."""
        settings, files = self.settings, outcome.files
        data = {**result.to_dict(), "source": outcome.job.name}
        if repeated_calls:
            data["usage"] = {**data.get("usage", {}), "repeated_calls": repeated_calls}
        if settings.dry_run:
            outcome.estimate = self._estimate(result, model)
            data = dry_run_data(data)
        elif files is not None:
            data["settings"] = self.output_settings.to_dict()
            with self._writing:
                self.check_stopped()  # after Ctrl-C a document still in flight (--jobs) writes nothing
                files.write(summary_markdown(data), data)
        elif self.outputs is None:
            data["settings"] = self.output_settings.to_dict()
        outcome.kind, outcome.data = "done", data

    def failed(self, outcome: Outcome, exc: BaseException, error_type: str | None = None) -> None:
        outcome.kind = "failed"
        outcome.failure = failure_of(outcome.job.name, exc)
        outcome.error_type = error_type or getattr(exc, "error_type", "") or type(exc).__name__
        if self.settings.debug:
            traceback.print_exc()
        if outcome.error_type in RUN_STOPPING_ERRORS:
            why = RUN_STOPPING_ERRORS[outcome.error_type]
            self.stop(f"{outcome.failure.reason} (the run stops: {why}, so every document would fail the same way)")

    def _estimate(self, result: Any, model: Any) -> Any:
        from ...backends.estimate import Estimate

        speed = self.resources.speed() if model.is_local else None
        return Estimate.of(result.calls, tuple(model.price_per_token()), speed)  # type: ignore[arg-type]

    # -- reporting, in order, on the main thread ----------------------------------------------------------------------
    def report(self, outcome: Outcome, failures: list[Failure]) -> None:
        settings, job = self.settings, outcome.job
        if outcome.stream is not None and outcome.kind != "done":
            outcome.stream.close()
            outcome.stream.resume()
        if outcome.kind == "skipped":
            if not settings.quiet:
                self.display.note(f"skipped {job.name}: already summarized in {outcome.files.markdown} "  # type: ignore[union-attr]
                                  "(--force redoes it)")
            if settings.as_json and not settings.dry_run:
                self.printer.json_line({**outcome.data, "skipped": True})
        elif outcome.kind == "failed":
            assert outcome.failure is not None
            failures.append(outcome.failure)
            if settings.as_json:
                self.printer.json_line({"source": job.name, "error": outcome.failure.reason,
                                        "error_type": outcome.error_type})
            elif not settings.quiet and self.display.total > 1:
                self.display.note(f"failed {job.name}: {outcome.failure.reason}", "red")
            self._log(outcome)
        else:
            if settings.dry_run:
                self.printer.estimate(job, outcome.data, outcome.estimate)
            else:
                if outcome.files is not None and not settings.as_json:
                    if settings.trace:
                        self.printer.trace(outcome.data)
                    self.printer.output_file(str(outcome.files.markdown))
                else:
                    self.printer.result(job, outcome.data, outcome.stream)
                if not settings.quiet:  # after the result: a streamed answer is on screen already
                    self.display.note(done_line(job, outcome.data))
                self.answered += 1
                self._log(outcome)
        self.display.finish(outcome.line, outcome.kind)
        if outcome.kind == "failed" and outcome.error_type in RUN_STOPPING_ERRORS:
            self.check_stopped()  # failed() set the reason

    def _log(self, outcome: Outcome) -> None:
        if self.settings.dry_run:
            return
        from .runlog import RunLog, RunRecord, runs_path

        data, s = outcome.data, self.settings
        usage = data.get("usage") or {}
        record = RunRecord(**storable(dict(
            started=outcome.started, seconds=round(outcome.seconds, 3), command=s.command, document=outcome.job.name,
            model=str(data.get("model") or s.model), status=outcome.kind, question=self.question,
            strategy=str(data.get("strategy") or s.strategy), window=data.get("window") or s.window, kv=s.kv,
            error=outcome.failure.reason if outcome.failure else None, segments=int(data.get("segments") or 0),
            calls=len(data.get("calls") or []) + int(usage.get("repeated_calls") or 0),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cost_usd=float(usage.get("cost_usd") or 0.0), cache_hits=int(usage.get("cache_hits") or 0),
            output=str(outcome.files.markdown) if outcome.files is not None and outcome.kind == "done" else None,
            result=data or None,
        )))
        path = runs_path(s.workspace)
        try:
            try:
                RunLog(path).add(record)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise
                aside = move_aside(path)  # a damaged history: kept aside, a new one started
                self.display.note(f"warning: the runs log {path} was damaged ({exc}); moved to {aside.name}, "
                                  "starting a new one", "yellow")
                RunLog(path).add(record)
        except (OSError, sqlite3.Error) as exc:
            self.display.note(f"warning: the runs log {path} could not be written ({exc})", "yellow")


def storable(value: Any) -> Any:
    """`value` with every string valid UTF-8: a file name that is not (Python keeps its bytes as lone surrogates)
    gets them as `\\xe9`, so SQLite can store it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            errors = "surrogateescape" if _only_escaped(value) else "backslashreplace"
            raw = value.encode("utf-8", errors)
            return raw.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


def _only_escaped(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def dry_run_data(data: dict[str, Any]) -> dict[str, Any]:
    """A dry run's JSON: the plan of calls and the estimate; no stand-in text, citations or costs that look real."""
    keep = {k: v for k, v in data.items() if k not in ("answer", "summary", "citations", "usage", "notes", "extras")}
    keep["calls"] = [{"agent": c.get("agent"), "segment": c.get("segment"), "path": c.get("path"),
                      "prompt_tokens": c.get("prompt_tokens"), "max_new_tokens": c.get("max_new_tokens")}
                     for c in data.get("calls") or []]
    keep.pop("finish_reason", None)
    return keep


# -- the whole run ----------------------------------------------------------------------------------------------------
# How the documents are read: (run, jobs) -> their outcomes, in the jobs' order (parallel.in_threads, cluster.on_ray).
Executor = Callable[["Run", list[Job]], Iterator[Outcome]]


def run(specs: list[str], question: str | None, settings: Settings, out: Path | None,
        executor: Executor = in_threads) -> int:
    """Reads every document with `executor`; returns the exit code."""
    err = stderr_console()
    try:
        preflight(settings)
    except FatalError as exc:
        note(err, f"error: {exc}", "red")
        return 1
    settings = fitted_window(settings, lambda message: note(err, message, "yellow"))
    jobs, failures = collect_jobs(specs, exclude=out)
    total = len(jobs) + len(failures)
    output_settings = OutputSettings(settings.model, settings.window, settings.strategy, settings.kv,
                                     prompts_fingerprint())
    finished = 0
    if len(jobs) > 1 and (settings.workers() > 1 or settings.ray):
        settings = replace(settings, stream=False)  # answers of documents read at once would interleave
    display = Display(err, len(jobs), enabled=not settings.quiet)
    printer = Printer(settings, display, headings=len(specs) > 1 or any(Path(s).is_dir() for s in specs))
    if settings.as_json:
        for failure in failures:
            printer.json_line({"source": failure.name, "error": failure.reason, "error_type": "DocumentError"})
    try:
        outputs = OutputFolder(out) if out else None
        if outputs is not None and not settings.dry_run:
            try:
                outputs.check()
            except OutputError as exc:
                raise FatalError(f"--out {out}: {exc}") from exc
        with ExitStack() as stack:
            stack.enter_context(display)
            resources = Resources(settings, stack, warn=lambda message: display.note(message, "yellow"),
                                  tracer=_tracer(settings, stack))
            current = Run(settings, question, display, printer, resources, outputs, output_settings)
            outcomes = executor(current, jobs)
            busy: list[tuple[Job, str]] = []
            try:
                for outcome in outcomes:  # in the documents' order, whatever order they finish in
                    if outcome.kind == "stopped":
                        continue  # the document that stopped the run comes later and says why
                    if outcome.kind == "busy":
                        busy.append((outcome.job, outcome.holder))
                        if len(jobs) > 1 and not settings.quiet:
                            display.note(f"{outcome.job.name}: another longread run ({outcome.holder}) is reading "
                                         "it with the same settings; coming back to it after the others")
                        continue
                    current.report(outcome, failures)
                    finished += 1
                current.check_stopped()
                for job, holder in busy:  # by now the other run has finished them, or will soon
                    if not settings.quiet:
                        display.note(f"waiting for the other longread run ({holder}) to finish {job.name}")
                    current.report(current.read_one(job, wait=True), failures)
                    finished += 1
            except KeyboardInterrupt:
                current.interrupt()
                raise
    except FatalError as exc:
        note(err, f"error: {exc}", "red")
        return 1
    except KeyboardInterrupt:
        backends.stop_local_engines()
        note(err, f"interrupted after {finished} of {len(jobs)} document(s). Finished work is kept: run the same "
                  f"command again to resume (checkpoints in {settings.workspace}).", "yellow")
        return EXIT_INTERRUPTED
    printer.totals(settings.model)
    if settings.model == DEFAULT_MODEL and answered(current) and not settings.quiet:
        note(err, SMALL_MODEL_NOTE, "yellow")
    if failures:
        if total == 1:
            note(err, f"error: {failures[0].name}: {failures[0].reason}", "red")
        else:
            err.print(failures_table(failures, total))
        return 1
    return 0
