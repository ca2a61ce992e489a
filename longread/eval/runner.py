"""Runs cases under settings (strategy x model x window x kv) and appends one JSON line per case per setting.

Resumable: the results file is read first, and every (dataset, case, strategy, model, window, kv) it holds is
finished and never recomputed (a failed case too: it is recorded with its error; `retry_errors` runs those
again, and the report keeps the last line of a key). A line is written whole and flushed as soon as its case is
done, so a killed run loses only the cases in flight; a half-written last line is cut off on the next start.

The model is built once per (model, kv), only when a case needs it, and reused by every case and setting of it.
With `jobs` > 1 that many cases run at once (threads), on any model: an API model gets that many requests at
once, and a local model's calls meet in its batcher and decode together (one process, one copy of the weights,
one GPU memory budget: `gpu_memory`). Where CUDA is in use each line records the peak GPU memory allocated
(`gpu_peak_bytes`): the case's own with `jobs` 1, the process's since its model was built with more.
Within one (model, kv) the order is case-major (each case under every window and strategy, then the next), so a
run stopped early still compares the strategies on the same cases.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..documents import Document
from ..errors import DamagedDataWarning
from .cases import Case
from .metrics import score
from .record import EvalRecord, NotARecord

ReadFunction = Callable[..., Any]  # read_case's signature, returning a longread.Result (or one with its fields)
ModelFactory = Callable[..., Any]


@dataclass(frozen=True)
class Setting:
    strategy: str
    model: str
    window: int
    kv: str | None = None

    def key(self, case: Case) -> tuple:
        """The EvalRecord.key of `case` under this setting."""
        return (case.dataset, case.id, self.strategy, self.model, self.window, self.kv)


def settings_of(strategies: Sequence[str], models: Sequence[str], windows: Sequence[int],
                kvs: Sequence[str | None] = (None,)) -> list[Setting]:
    return [Setting(s, m, w, k) for m, k, w, s in product(models, kvs or [None], windows, strategies)]


# -- how a case is read -------------------------------------------------------------------------------------------
CHOICE_INSTRUCTION = "Answer with the letter of the correct option ({letters})."


def question_for(case: Case) -> str | None:
    """The question as the strategy sees it; None for a summary.

    A multiple-choice case is its question, a blank line, the options one a line as "(A) text", a blank line and
    `CHOICE_INSTRUCTION` ("Answer with the letter of the correct option (A, B, C or D)."). Every other case is its
    question as it is. `metrics.choice_letter` reads the letter back, whatever form the reply gives it in.
    """
    if case.question is None:
        return None
    if not case.choices:
        return case.question
    letters = list(case.choices)
    spoken = ", ".join(letters[:-1]) + f" or {letters[-1]}" if len(letters) > 1 else letters[0]
    options = "\n".join(f"({letter}) {text}" for letter, text in case.choices.items())
    return f"{case.question.strip()}\n\n{options}\n\n{CHOICE_INSTRUCTION.format(letters=spoken)}"


def check_strategies(names: Sequence[str]) -> None:
    """ValueError naming a strategy spec ("rag", "multipath:paths=5") that the registry cannot build, before any
    model loads."""
    from ..workflows.registry import get_strategy

    for name in names:
        try:
            get_strategy(name)
        except Exception as exc:  # StrategyError, or whatever a plugin's factory raises
            raise ValueError(_one_line(exc) or f"strategy {name!r} cannot be built") from None


def read_case(case: Case, document: Document, model: Any, *, strategy: str, window: int, kv: str | None = None,
              checkpointer: Any = None) -> Any:
    """One case read by one strategy: `longread.Reader(...).ask(question)`, or `.summarize()` without a question.
    The one place that knows how the eval calls the product."""
    from ..reader import Reader

    reader = Reader(document, model=model, window=window, kv=kv, strategy=strategy, checkpointer=checkpointer)
    question = question_for(case)
    return reader.summarize() if question is None else reader.ask(question)


# -- the results file ---------------------------------------------------------------------------------------------
class ResultsFile:
    """The JSONL results: the records it already holds, and appending whole lines to it (thread-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[EvalRecord] = []
        self._lock = threading.Lock()
        if self.path.exists():
            self._repair()
            self.records = read_results(self.path)

    def _repair(self) -> None:
        """Cuts a half-written last line (a run killed while writing it), so the next line starts clean."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def finished(self, *, retry_errors: bool = False) -> set[tuple]:
        latest = {record.key: record for record in self.records}
        return {key for key, record in latest.items() if not (retry_errors and record.failed)}

    def append(self, record: EvalRecord) -> None:
        text = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            self.records.append(record)


def read_results(path: str | Path) -> list[EvalRecord]:
    """The record of every line of a results file that parses. A half-written last line is skipped; any other line
    that is not a JSON object in UTF-8 with a case and a setting is left out with a DamagedDataWarning naming the
    file and the line (its case counts as not run)."""
    records = []
    raws = Path(path).read_bytes().split(b"\n")
    for number, raw in enumerate(raws, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            _left_out(path, number, "is not valid UTF-8")
            continue
        except json.JSONDecodeError:
            if number < len(raws):  # the last line may be one a killed run was writing
                _left_out(path, number, "is not JSON")
            continue
        if not isinstance(line, dict):
            _left_out(path, number, f"is a JSON {type(line).__name__}, not an object")
            continue
        try:
            records.append(EvalRecord.from_dict(line))
        except NotARecord as exc:
            _left_out(path, number, str(exc))
    return records


def _left_out(path: str | Path, number: int, why: str) -> None:
    warnings.warn(f"{path}: line {number} {why}; left out", DamagedDataWarning, stacklevel=3)


# -- one case -----------------------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def gpu_peak_bytes(reset: bool = False) -> int | None:
    """torch.cuda.max_memory_allocated() where torch is loaded and CUDA is there (None elsewhere: an API-only run
    never imports torch for it); `reset` starts a new peak."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return int(torch.cuda.max_memory_allocated())


def case_record(case: Case, setting: Setting, *, result: Any = None, error: BaseException | None = None,
                seconds: float = 0.0, model_name: str | None = None, document: Document | None = None,
                gpu_peak: int | None = None) -> EvalRecord:
    """The record of one case under one setting: scored from `result` (a longread.Result: text, calls, usage,
    document_tokens, segments, extras), or failed with `error` (see docs/evaluation.md for the fields)."""
    record = EvalRecord(
        case=case.id, dataset=case.dataset, task=case.task, strategy=setting.strategy, model=setting.model,
        window=setting.window, kv=setting.kv, seconds=round(seconds, 3), gpu_peak_bytes=gpu_peak,
        question=case.question, gold=case.gold, model_name=model_name, metadata=case.metadata,
    )
    if result is not None:
        record.answer = str(result.text)
        record.score, record.metrics = score(case, record.answer, document.text if document is not None else None)
        record.calls = [call.to_dict() for call in result.calls]
        record.usage = result.usage.to_dict()
        record.document_tokens, record.segments = result.document_tokens, result.segments
        record.extras = _jsonable(result.extras) if result.extras else {}
    if error is not None:
        record.error = f"{type(error).__name__}: {_one_line(error) or 'no message'}"[:2000]
    record.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    return record


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def run_case(case: Case, document: Document | None, model: Any, setting: Setting, read: ReadFunction,
             load_error: BaseException | None = None, checkpointer: Any = None, own_peak: bool = False
             ) -> EvalRecord:
    """Reads and scores one case; any failure becomes the record's error, never an exception. `own_peak`: the case
    runs alone, so the GPU peak is reset first and the line's is the case's own."""
    started = time.monotonic()
    model_name = getattr(model, "name", None)
    if load_error is not None:
        return case_record(case, setting, error=load_error, model_name=model_name)
    if own_peak:
        gpu_peak_bytes(reset=True)
    try:
        result = read(case, document, model, strategy=setting.strategy, window=setting.window, kv=setting.kv,
                      checkpointer=checkpointer)
        return case_record(case, setting, result=result, seconds=time.monotonic() - started, model_name=model_name,
                           document=document, gpu_peak=gpu_peak_bytes())
    except Exception as exc:  # a failing case is recorded and the run goes on
        return case_record(case, setting, error=exc, seconds=time.monotonic() - started, model_name=model_name,
                           gpu_peak=gpu_peak_bytes())


# -- the run ------------------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    cases: int = 0  # cases x settings asked for
    skipped: int = 0  # already in the results file
    ran: int = 0
    failed: int = 0
    models_failed: list[str] | None = None


def _is_local(model: str) -> bool:
    from ..backends.registry import is_local_model

    return is_local_model(model)


class _Documents:
    """Each document loaded once, the first time a case needs it (many questions share one)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Document | None, BaseException | None]] = {}

    def get(self, case: Case) -> tuple[Document | None, BaseException | None]:
        key = case.document_key
        if key not in self._cache:
            try:
                self._cache[key] = (case.load_document(), None)
            except Exception as exc:  # a bad document fails its cases, not the run
                self._cache[key] = (None, exc)
        return self._cache[key]


def run_eval(
    cases: Sequence[Case],
    settings: Sequence[Setting],
    out: str | Path,
    *,
    jobs: int = 1,
    limit: int | None = None,
    retry_errors: bool = False,
    read: ReadFunction = read_case,
    model_factory: ModelFactory | None = None,
    progress: Any = None,  # an EvalProgress (set_total, describe, finished)
    on_note: Callable[[str], None] | None = None,
    checkpointer: Any = None,
    gpu_memory: float | None = None,
) -> RunSummary:
    """Runs what `out` does not hold yet; see the module docstring. `read` and `model_factory` (default
    `longread.backends.get_model`) are the seams tests replace. A `checkpointer` (LangGraph saver) is passed to
    every read, so a long case killed half-way resumes at its last worker step. `gpu_memory` (a fraction of the
    card) goes to local models."""
    if model_factory is None:
        from ..backends import get_model as model_factory  # type: ignore[no-redef]
    note = on_note or (lambda message: None)
    chosen = list(cases)[:limit] if limit else list(cases)
    results = ResultsFile(out)
    done = results.finished(retry_errors=retry_errors)
    summary = RunSummary(cases=len(chosen) * len(settings), models_failed=[])
    groups: dict[tuple[str, str | None], list[Setting]] = {}
    for setting in settings:
        groups.setdefault((setting.model, setting.kv), []).append(setting)
    pending = {
        group: [(case, s) for case in chosen for s in members if s.key(case) not in done]
        for group, members in groups.items()
    }
    summary.skipped = summary.cases - sum(len(p) for p in pending.values())
    if progress is not None:
        progress.set_total(summary.cases - summary.skipped)
    if summary.skipped:
        note(f"resuming {results.path}: {summary.skipped} of {summary.cases} already done, {summary.cases - summary.skipped} to run")
    documents = _Documents()
    for (model_string, kv), work in pending.items():
        if not work:
            continue
        label = f"{model_string}" + (f" kv {kv}" if kv else "")
        if progress is not None:
            progress.describe(f"loading {label}")
        options: dict[str, Any] = {"kv": kv}
        if gpu_memory is not None and _is_local(model_string):
            options["gpu_memory"] = gpu_memory
        try:
            model = model_factory(model_string, **options)
        except Exception as exc:  # every case of this model would fail the same way: say it once, go on
            note(f"error: --model {model_string}{' --kv ' + kv if kv else ''}: {_one_line(exc)}; its "
                 f"{len(work)} case(s) are not run")
            summary.models_failed.append(model_string)  # type: ignore[union-attr]
            continue
        workers = max(1, jobs)
        if progress is not None:
            progress.describe(label)
        try:
            _run_group(work, model, workers, read, documents, results, summary, progress, checkpointer)
        finally:
            del model
            gc.collect()
    return summary


def _run_group(work: list[tuple[Case, Setting]], model: Any, workers: int, read: ReadFunction,
               documents: _Documents, results: ResultsFile, summary: RunSummary, progress: Any,
               checkpointer: Any) -> None:
    def finish(record: EvalRecord) -> None:
        results.append(record)
        summary.ran += 1
        summary.failed += record.failed
        if progress is not None:
            progress.finished(record)

    if workers == 1:
        for case, setting in work:
            document, error = documents.get(case)
            finish(run_case(case, document, model, setting, read, error, checkpointer, own_peak=True))
        return
    gpu_peak_bytes(reset=True)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="longread-eval")
    queue: Iterable[tuple[Case, Setting]] = iter(work)
    running: set[Future] = set()
    try:
        for case, setting in queue:  # at most `workers` in flight: a stopped run leaves little half-done
            document, error = documents.get(case)
            running.add(pool.submit(run_case, case, document, model, setting, read, error, checkpointer))
            if len(running) >= workers:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    finish(future.result())
        for future in wait(running).done:
            finish(future.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
