"""The run of `ask` and `summarize`: checks before any call, then each document read, written and reported.

    run(specs, question, settings, out) -> exit code

1. `preflight`: the model string resolves and its key is set (or a dry run needs none), the strategy exists,
   --window fits the model: one clear line and exit 1 before any document is read.
2. `collect_jobs`: the documents; those that cannot even be listed are failures from the start.
3. For each document, `read_one` returns an `Outcome` (done, skipped, failed) and `report` prints it, logs it in
   the runs log and counts it on the display. `read_one` touches only its own document's files and progress
   line, so several can run at once: with `--jobs N` a pool of threads calls it (parallel.py) and `report` runs
   on the main thread, in the documents' order; with `--ray` the reading itself (`read_document`) runs as a Ray
   task between `prepare` and `finish`, which stay here (cluster.py).
4. An authentication error stops the whole run: every other document would fail the same way.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from .. import backends
from ..console import Display, DocumentProgress, TextStream, failures_table, note, stderr_console
from ..errors import LongreadError, ModelError
from .jobs import Failure, Job, collect_jobs, failure_of, one_line
from .outputs import OutputFolder, OutputSettings, SummaryFiles, prompts_fingerprint, summary_markdown
from .printing import Printer, done_line
from .settings import Settings

EXIT_INTERRUPTED = 130
AUTH_ERRORS = frozenset({"AuthenticationError", "PermissionDeniedError"})


class FatalError(Exception):
    """Stops the whole run (the model cannot run, the workspace cannot be opened, a rejected key)."""


# -- before any document ----------------------------------------------------------------------------------------------
def preflight(settings: Settings) -> None:
    """What would make every document fail, found before the first one is read (no call, no model loaded)."""
    from .strategies import strategy_names

    if settings.api_base and backends.backend_for(settings.model).name != "litellm":
        raise FatalError(f"--api-base {settings.api_base}: {settings.model} runs in this process; --api-base names "
                         "the server of an API model (--model openai/NAME or hosted_vllm/NAME)")
    try:
        # A server of one's own (--api-base) may take no key; one that wants one answers 401, which stops the run.
        backends.check_model(settings.model, need_key=not settings.dry_run and not settings.api_base)
    except ModelError as exc:
        raise FatalError(_with_alias(settings, str(exc))) from exc
    name = settings.strategy.split(":", 1)[0]
    if name not in strategy_names():
        raise FatalError(f"--strategy {settings.strategy}: unknown strategy (choose one of "
                         f"{', '.join(strategy_names())})")


def _with_alias(settings: Settings, message: str) -> str:
    return f"{message} (alias {settings.alias})" if settings.alias else message


@contextmanager
def open_checkpointer(workspace: Path) -> Iterator[Any]:
    """LangGraph's SqliteSaver on WORKSPACE/checkpoints.sqlite: every worker step of every run is kept there."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    workspace.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: the saver guards the connection with its own lock, and the async paths of the
    # graph touch it from worker threads.
    conn = sqlite3.connect(workspace / "checkpoints.sqlite", check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


@dataclass
class Resources:
    """The model and the checkpointer, made on first need: a run whose documents are all done loads nothing."""

    settings: Settings
    stack: ExitStack
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
            raise FatalError(
                f"--window {settings.window} is larger than the context window of {model.name} ({model.context_window})"
            )
        if settings.dry_run:
            from ..backends.estimate import estimate_model

            return estimate_model(model)
        return model

    def speed(self) -> Any:
        """A dry run of a local model: its measured speed on this machine (one short real call, once a run)."""
        with self._lock:
            if self._speed is None:
                from ..backends.estimate import calibrate

                self._speed = calibrate(self.model().counter)
            return self._speed

    def checkpointer(self) -> Any:
        if self.settings.dry_run:
            return None  # a dry run leaves nothing behind
        with self._lock:
            if self._checkpointer is None:
                try:
                    self._checkpointer = self.stack.enter_context(open_checkpointer(self.settings.workspace))
                except (OSError, sqlite3.Error) as exc:
                    raise FatalError(f"workspace {self.settings.workspace}: {exc}") from exc
            return self._checkpointer


# -- one document -----------------------------------------------------------------------------------------------------
def read_document(settings: Settings, question: str | None, document: Any, model: Any, checkpointer: Any, *,
                  on_event: Any = None, on_text: Any = None) -> Any:
    """The reading of one document with the run's strategy and checkpoints -> Result. Runs in this process or in
    a Ray task (cluster.py), so it depends on nothing but its arguments."""
    from ..reader import Reader
    from .strategies import install_plugin_strategies

    install_plugin_strategies()
    reader = Reader(document, model=model, window=settings.window, checkpointer=checkpointer,
                    strategy=settings.strategy)
    if settings.force and checkpointer is not None:
        reader.forget(question)  # start over instead of resuming
    if question is not None:
        return reader.ask(question, on_event=on_event, on_text=on_text)
    return reader.summarize(on_event=on_event, on_text=on_text)


@dataclass
class Outcome:
    job: Job
    kind: str  # done | skipped | failed
    data: dict[str, Any] = field(default_factory=dict)
    files: SummaryFiles | None = None
    failure: Failure | None = None
    estimate: Any = None
    stream: TextStream | None = None
    line: DocumentProgress | None = None
    started: float = 0.0
    seconds: float = 0.0
    error_type: str = ""


@dataclass
class Run:
    settings: Settings
    question: str | None
    display: Display
    printer: Printer
    resources: Resources
    outputs: OutputFolder | None
    output_settings: OutputSettings

    def read_one(self, job: Job) -> Outcome:
        """Reads one document (or finds it done); never raises for that document's own failures."""
        outcome = Outcome(job, "failed", started=time.time())
        clock = time.monotonic()
        try:
            document = self.prepare(outcome)
            if document is not None:
                model = self.resources.model()
                checkpointer = self.resources.checkpointer()
                line = outcome.line = self.display.document(job.name, self.mode)
                stream = outcome.stream = self.printer.stream_for(job)
                line.set_phase("reading")
                result = read_document(self.settings, self.question, document, model, checkpointer,
                                       on_event=line.on_event, on_text=stream)
                self.finish(outcome, result, model)
        # OSError: an output that cannot be written (disk full, name too long) fails that document alone.
        except (LongreadError, OSError) as exc:
            self.failed(outcome, exc)
        finally:
            outcome.seconds = time.monotonic() - clock
        return outcome

    @property
    def mode(self) -> str:
        return "summary" if self.question is None else "query"

    def prepare(self, outcome: Outcome) -> Any:
        """The document to read, or None when it is done already (the outcome is then `skipped`). A bad file
        raises its DocumentError here, before any model is loaded."""
        settings, job = self.settings, outcome.job
        files = self.outputs.files_for(job) if self.outputs else None
        outcome.files = files
        if files and not settings.force and files.finished():
            stored = files.stored()
            changes = self.output_settings.differences(stored.get("settings") if stored else None)
            if stored is not None and not changes:
                outcome.kind, outcome.data = "skipped", stored
                return None
            if stored is not None and not settings.quiet:
                self.display.note(f"redoing {job.name}: its summary was made with other settings "
                                  f"({'; '.join(changes)})")
        return job.load()

    def finish(self, outcome: Outcome, result: Any, model: Any = None) -> None:
        """A read document's data, written under --out (or its dry-run estimate): the outcome is `done`."""
        settings, files = self.settings, outcome.files
        data = {**result.to_dict(), "source": outcome.job.name}
        if settings.dry_run:
            outcome.estimate = self._estimate(result, model)
            data = dry_run_data(data)
        elif files is not None:
            data["settings"] = self.output_settings.to_dict()
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

    def _estimate(self, result: Any, model: Any) -> Any:
        from ..backends.estimate import Estimate

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
                    self.printer.output_file(str(outcome.files.markdown))
                else:
                    self.printer.result(job, outcome.data, outcome.stream)
                if not settings.quiet:  # after the result: a streamed answer is on screen already
                    self.display.note(done_line(job, outcome.data))
                self._log(outcome)
        self.display.finish(outcome.line, outcome.kind)
        if outcome.kind == "failed" and outcome.error_type in AUTH_ERRORS:
            raise FatalError(f"{outcome.failure.reason} (the run stops: every document would fail the same way)")  # type: ignore[union-attr]

    def _log(self, outcome: Outcome) -> None:
        if self.settings.dry_run:
            return
        from ..runlog import RunLog, RunRecord, runs_path

        data, s = outcome.data, self.settings
        usage = data.get("usage") or {}
        record = RunRecord(
            started=outcome.started, seconds=round(outcome.seconds, 3), command=s.command, document=outcome.job.name,
            model=str(data.get("model") or s.model), status=outcome.kind, question=self.question,
            strategy=str(data.get("strategy") or s.strategy), window=data.get("window") or s.window, kv=s.kv,
            error=outcome.failure.reason if outcome.failure else None, segments=int(data.get("segments") or 0),
            calls=len(data.get("calls") or []), prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0), cost_usd=float(usage.get("cost_usd") or 0.0),
            output=str(outcome.files.markdown) if outcome.files is not None and outcome.kind == "done" else None,
            result=data or None,
        )
        try:
            RunLog(runs_path(s.workspace)).add(record)
        except (OSError, sqlite3.Error) as exc:
            self.display.note(f"warning: the runs log {runs_path(s.workspace)} could not be written ({exc})", "yellow")


def dry_run_data(data: dict[str, Any]) -> dict[str, Any]:
    """A dry run's JSON: the plan of calls and the estimate; no stand-in text, citations or costs that look real."""
    keep = {k: v for k, v in data.items() if k not in ("answer", "summary", "citations", "usage", "notes", "extras")}
    keep["calls"] = [{"agent": c.get("agent"), "segment": c.get("segment"), "path": c.get("path"),
                      "prompt_tokens": c.get("prompt_tokens"), "max_new_tokens": c.get("max_new_tokens")}
                     for c in data.get("calls") or []]
    keep.pop("finish_reason", None)
    return keep


# -- the whole run ----------------------------------------------------------------------------------------------------
def run(specs: list[str], question: str | None, settings: Settings, out: Path | None) -> int:
    """Reads every document; returns the exit code."""
    err = stderr_console()
    try:
        preflight(settings)
    except FatalError as exc:
        note(err, f"error: {exc}", "red")
        return 1
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
        with ExitStack() as stack:
            stack.enter_context(display)
            resources = Resources(settings, stack)
            current = Run(settings, question, display, printer, resources, OutputFolder(out) if out else None,
                          output_settings)
            if settings.ray and not settings.dry_run:
                from .cluster import read_on_ray

                outcomes = read_on_ray(current, jobs, settings.ray)
            else:
                from .parallel import read_all

                outcomes = read_all(current, jobs, settings.workers())
            for outcome in outcomes:  # in the documents' order, whatever order they finish in
                current.report(outcome, failures)
                finished += 1
    except FatalError as exc:
        note(err, f"error: {exc}", "red")
        return 1
    except KeyboardInterrupt:
        note(err, f"interrupted after {finished} of {len(jobs)} document(s). Finished work is kept: run the same "
                  f"command again to resume (checkpoints in {settings.workspace}).", "yellow")
        return EXIT_INTERRUPTED
    printer.totals(settings.model)
    if failures:
        if total == 1:
            note(err, f"error: {failures[0].name}: {failures[0].reason}", "red")
        else:
            err.print(failures_table(failures, total))
        return 1
    return 0
