"""`--jobs N`: N documents read at once, each in its own thread with its own checkpoint thread and progress line.

The documents share one model, so they share its cap on calls in flight and its pause after a rate limit (a 429
slows every document: backends/litellm/pacing.py). Outcomes come back in the documents' order, so stdout and --json read
the same as a run of one document at a time; a document that finishes early waits on its line for the ones
before it.

Why not concurrent.futures.ThreadPoolExecutor: its threads are joined when the interpreter exits, so Ctrl-C
would wait for every document in flight to finish. These threads are daemons: on Ctrl-C the run stops starting
documents and returns; a document in flight keeps the steps it checkpointed, and the next run resumes it there.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Generic, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Value = TypeVar("Value")


class DaemonPool(Generic[Item, Value]):
    """`fn` over `items` in `workers` daemon threads; `results()` yields in the items' order."""

    def __init__(self, fn: Callable[[Item], Value], items: Sequence[Item], workers: int):
        self.fn = fn
        self.items = list(items)
        self.futures: list[Future[Value]] = [Future() for _ in self.items]
        self._next = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.threads = [threading.Thread(target=self._work, name=f"longread-job-{i}", daemon=True)
                        for i in range(max(1, min(workers, len(self.items))))]
        for thread in self.threads:
            thread.start()

    def _take(self) -> int | None:
        with self._lock:
            if self._stopped.is_set() or self._next >= len(self.items):
                return None
            self._next += 1
            return self._next - 1

    def _work(self) -> None:
        while (index := self._take()) is not None:
            future = self.futures[index]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.fn(self.items[index]))
            except BaseException as exc:  # handed to the main thread, which raises it in order
                future.set_exception(exc)

    def results(self) -> Iterator[Value]:
        try:
            for future in self.futures:
                yield future.result()
        finally:
            self.stop()

    def stop(self) -> None:
        """No document starts after this; the ones in flight are left to their threads."""
        self._stopped.set()
        for future in self.futures:
            future.cancel()


def read_all(run, jobs: Sequence, workers: int) -> Iterator:  # noqa: ANN001  (runner.Run, runner.Job)
    """The outcomes of `run.read_one` over the jobs, in order; `workers` at a time."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield run.read_one(job)
        return
    yield from DaemonPool(run.read_one, jobs, workers).results()


def in_threads(run, jobs: Sequence) -> Iterator:  # noqa: ANN001  (runner.Run, runner.Job)
    """The runner's default executor: the documents in `--jobs` daemon threads (one at a time without it)."""
    return read_all(run, jobs, run.settings.workers())
