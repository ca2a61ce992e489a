"""Bodies written once for the sync and the async caller: a body is a generator that yields what it needs done
(a model call, a graph run, blocking work) and is sent back the outcome; `drive` does each with the sync API,
`adrive` with the async one.

    def reading(self, segment, notes) -> Steps[WorkerStep]:       # agents/worker.py
        completion = yield Call(self.model, messages, cap, tag=CallTag("worker", segment.index))
        return self.step(segment, notes, completion)

    worker_step = drive(worker.reading(segment, notes))           # model.complete, in this thread
    worker_step = await adrive(worker.reading(segment, notes))    # await model.acomplete

Why a generator ("sans-IO") rather than one async body that the sync entry point runs with `asyncio.run` or a
loop in a thread: the sync path must stay sync. LangGraph's `invoke` runs only sync nodes and the CLI's
checkpointer (SqliteSaver) has no async methods; a sync call through a loop would move the local engine's calls,
Ctrl-C and the tracing context onto another thread or loop. With a generator the sync driver makes exactly the
calls the old sync body made, in the same thread and order, and the async driver awaits exactly what the old async
body awaited: the steps between the yields are the one body, so events, checkpoints and batching are unchanged.

What a body yields is an `Effect`: an object with `run()` (the sync way) and `arun()` (the async way). `Call` is a
model call; `Twin` is any API with both forms (`graph.invoke` / `graph.ainvoke`, `strategy.run` / `strategy.arun`);
`Blocking` is work that blocks (run in place, or in a worker thread off the event loop); `Together` runs bodies at
once (threads, or tasks). Whatever an effect raises is thrown into the body at its `yield`, so the body sees a
failure (a window exceeded, a model error, Ctrl-C, a cancelled task) exactly where its own call would have raised
it.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Protocol, Sequence, TypeVar

if TYPE_CHECKING:  # (only named in annotations: base.py's ChatModel drives its own calls with this module)
    from .base import CallTag, ChatModel, Completion, Message, TextCallback

T = TypeVar("T")


class Effect(Protocol):
    def run(self) -> Any: ...

    async def arun(self) -> Any: ...


Steps = Generator[Effect, Any, T]  # yields effects, is sent their outcomes, returns the body's value


@dataclass(frozen=True)
class Call:
    """One model call: `model.complete(...)` or `await model.acomplete(...)` with these arguments."""

    model: ChatModel
    messages: Sequence[Message]
    max_new_tokens: int
    temperature: float = 0.0
    window: int | None = None
    cache_prefix: int | None = None
    tag: CallTag | None = None
    on_text: TextCallback | None = None
    response_format: dict[str, Any] | None = None
    cancel: threading.Event | None = field(default=None, repr=False)

    def _options(self) -> dict[str, Any]:
        return {"window": self.window, "cache_prefix": self.cache_prefix, "tag": self.tag, "on_text": self.on_text,
                "response_format": self.response_format, "cancel": self.cancel}

    def run(self) -> Completion:
        return self.model.complete(self.messages, self.max_new_tokens, self.temperature, **self._options())

    async def arun(self) -> Completion:
        return await self.model.acomplete(self.messages, self.max_new_tokens, self.temperature, **self._options())


class Twin:
    """One call of an API that has a sync and an async form: `sync(*args, **kwargs)` for `drive`,
    `await async_(*args, **kwargs)` for `adrive`."""

    def __init__(self, sync: Callable[..., Any], async_: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any):
        self.sync, self.async_, self.args, self.kwargs = sync, async_, args, kwargs

    def run(self) -> Any:
        return self.sync(*self.args, **self.kwargs)

    async def arun(self) -> Any:
        return await self.async_(*self.args, **self.kwargs)


@dataclass(frozen=True)
class Blocking:
    """Work that blocks (CPU or disk): done in place by `drive`, in a worker thread by `adrive` (off the loop)."""

    work: Callable[[], Any]

    def run(self) -> Any:
        return self.work()

    async def arun(self) -> Any:
        return await asyncio.to_thread(self.work)


@dataclass(frozen=True)
class Together:
    """Independent bodies at once, their values in order: one thread each (named `thread_name`_N) driven by
    `drive`, or one task each driven by `adrive`."""

    bodies: Sequence[Steps[Any]]
    thread_name: str = "longread"

    def run(self) -> list[Any]:
        with ThreadPoolExecutor(max_workers=max(1, len(self.bodies)), thread_name_prefix=self.thread_name) as pool:
            return list(pool.map(drive, self.bodies))

    async def arun(self) -> list[Any]:
        return list(await asyncio.gather(*(adrive(body) for body in self.bodies)))


def drive(steps: Steps[T]) -> T:
    """Runs a body with the sync API: each effect's `run()`, in this thread."""
    try:
        effect = next(steps)
        while True:
            try:
                outcome = effect.run()
            except BaseException as error:  # the body sees it at its yield (and may handle it)
                effect = steps.throw(error)
            else:
                effect = steps.send(outcome)
    except StopIteration as done:
        return done.value


async def adrive(steps: Steps[T]) -> T:
    """Runs a body with the async API: each effect's `arun()`, awaited."""
    try:
        effect = next(steps)
        while True:
            try:
                outcome = await effect.arun()
            except BaseException as error:
                effect = steps.throw(error)
            else:
                effect = steps.send(outcome)
    except StopIteration as done:
        return done.value
