"""`--ray [ADDRESS]`: a folder run's documents as tasks on a Ray cluster.

    driver (this process)                         a Ray task, on any node
    prepare: skip finished, load the document  -> read_document(settings, question, document)  (its model is built
                                                  once per worker process; its checkpoints are the workspace's)
    finish: write under --out, report           <- Result (or the document's failure)

The driver keeps everything a local run does with files and the terminal: the skip of finished documents, the
output files, stdout, the runs log, the display (a line per document in flight) and the failure table. A task
receives the loaded document, so the nodes need longread and the model, not the input files. Checkpoints are
written in the workspace path on the node that reads the document: on one machine, or with the workspace on a
shared filesystem, a rerun resumes a half-read document where it stopped; elsewhere it reads it again (finished
documents are skipped by the driver either way). A task takes the lock of its document's work there too, waiting
for another run that holds it; a checkpoint it cannot save stops the run on the driver, as a local one would.

`auto` joins the local Ray instance (`ray start --head`) or starts one for the run; another address is passed
to `ray.init` (`ray://HOST:10001`, `HOST:6379`). Each task asks for one CPU; `--jobs N` caps the tasks in flight
(default: the cluster's CPUs). With an API model each task has its own model and cap on calls; point them all at
one server (`longread serve`, vLLM) to share a GPU and its caches.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from ...errors import LongreadError
from .runner import CHECKPOINT_ERROR, FatalError, Outcome, Run, read_document
from .workspace import checkpoints_path, open_checkpointer

_MODELS: dict[tuple[str, str], Any] = {}  # per worker process: a model is built (weights loaded) once


def read_task(settings: Any, question: str | None, document: Any) -> dict[str, Any]:
    """The body of a Ray task: one document read -> {"result": Result, "repeated_calls": n} or {"error",
    "error_type"}. It waits for the lock of the document's work when another run holds it (read_document); a
    checkpoint that cannot be saved is the error_type CHECKPOINT_ERROR, which stops the run on the driver."""
    import sqlite3

    from ... import backends
    from .workspace import checkpoint_failure

    try:
        options = settings.model_options()
        key = (settings.model, repr(sorted(options.items())))
        if key not in _MODELS:
            from .runner import client_model

            _MODELS[key] = client_model(settings, backends.get_model(settings.model, **options))  # --cache
        with open_checkpointer(checkpoints_path(settings.workspace)) as checkpointer:
            result, repeated = read_document(settings, question, document, _MODELS[key], checkpointer)
            return {"result": result, "repeated_calls": repeated}
    except sqlite3.Error as exc:
        return {"error": checkpoint_failure(exc, checkpoints_path(settings.workspace)), "error_type": CHECKPOINT_ERROR}
    except (LongreadError, OSError) as exc:
        return {"error": " ".join(str(exc).split()) or type(exc).__name__,
                "error_type": getattr(exc, "error_type", "") or type(exc).__name__}


def connect(address: str) -> tuple[Any, bool]:
    """(the ray module, whether this run started Ray and so shuts it down)."""
    try:
        import ray
    except ImportError:
        raise FatalError("--ray needs Ray: pip install 'longread[ray]'") from None
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except Exception as exc:  # ConnectionError, a version mismatch, a refused ray:// client, ...
        if token_authentication(exc):
            raise FatalError(f"--ray {address}: the cluster asks for token authentication (Ray's RAY_AUTH_MODE=token): "
                             "run with RAY_AUTH_MODE=token set, and the cluster's token in ~/.ray/auth_token or "
                             "RAY_AUTH_TOKEN") from None
        raise FatalError(f"--ray {address}: could not reach a Ray cluster ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from None
    return ray, True


def token_authentication(error: BaseException) -> bool:
    """Ray (2.5x and later) refused this client for want of the cluster's token: its AuthenticationError, or the
    core's InvalidAuthToken / UNAUTHENTICATED status in another exception's text."""
    names = {type(error).__name__} | {type(c).__name__ for c in (error.__cause__, error.__context__) if c}
    if "AuthenticationError" in names:
        return True
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - Ray's __str__ itself may ask the core for the mode
        text = getattr(error, "message", "") or ""
    return "InvalidAuthToken" in text or "UNAUTHENTICATED" in text


def on_ray(address: str) -> Callable[[Run, Sequence[Any]], Iterator[Outcome]]:
    """The runner's executor for `--ray ADDRESS`."""
    return lambda run, jobs: read_on_ray(run, jobs, address)


def read_on_ray(run: Run, jobs: Sequence[Any], address: str) -> Iterator[Outcome]:
    """The outcomes of the jobs read as Ray tasks, in the jobs' order (like parallel.read_all)."""
    ray, started = connect(address)
    task = ray.remote(num_cpus=1, max_retries=1)(read_task)
    limit = run.settings.jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: deque[tuple[Outcome, Any]] = deque()
    queue = deque(jobs)
    try:
        while queue or pending:
            while queue and sum(ref is not None for _, ref in pending) < limit and run.stop_reason is None:
                outcome, ref = _submit(run, task, queue.popleft())
                pending.append((outcome, ref))
            if not pending:  # the run stopped (a rejected key, checkpoints that cannot be saved)
                run.check_stopped()
            outcome, ref = pending.popleft()
            if ref is not None:
                _collect(run, outcome, ray, ref)
            yield outcome
    finally:
        for _, ref in pending:
            if ref is not None:
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _submit(run: Run, task: Any, job: Any) -> tuple[Outcome, Any]:
    import time

    outcome = Outcome(job, "failed", started=time.time())
    try:
        document = run.prepare(outcome)
        if document is not None:
            run.resources.checkpointer()  # the workspace is checked here before the first task is sent
    except (LongreadError, OSError) as exc:
        run.failed(outcome, exc)
        return outcome, None
    if document is None:  # finished in an earlier run
        return outcome, None
    outcome.line = run.display.document(job.name, run.mode)
    outcome.line.set_phase("reading on the cluster")
    outcome.seconds = time.monotonic()  # until _collect: when it was sent
    return outcome, task.remote(run.settings, run.question, document)


def _collect(run: Run, outcome: Outcome, ray: Any, ref: Any) -> None:
    import time

    sent = outcome.seconds
    try:
        reply = ray.get(ref)
    except Exception as exc:  # the task itself failed: its worker died, or an error longread does not expect
        cause = getattr(exc, "cause", None) or exc
        run.failed(outcome, RuntimeError(f"the Ray task failed: {type(cause).__name__}: {str(cause)[:300]}"),
                   type(cause).__name__)
        reply = None
    if reply is not None and reply.get("error_type") == CHECKPOINT_ERROR:
        raise run.stop(reply["error"])
    if reply is not None and "error" in reply:
        run.failed(outcome, LongreadError(reply["error"]), reply["error_type"])
    elif reply is not None:
        try:
            run.finish(outcome, reply["result"], repeated_calls=reply.get("repeated_calls", 0))
        except (LongreadError, OSError) as exc:  # the output could not be written here
            run.failed(outcome, exc)
    outcome.seconds = time.monotonic() - sent
