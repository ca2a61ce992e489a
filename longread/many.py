"""Many documents at once from Python: the async API behind `--jobs`.

    results = await longread.aask_many(["a.txt", "b.pdf", ...], "Who dies?", model="openai/gpt-4o-mini", jobs=8)
    summaries = longread.summarize_many(paths, model="openai/gpt-4o-mini", jobs=8)      # the sync twin

`jobs` documents are read at once, on one event loop. The model is built once and shared, so every document's
calls go through its one cap on calls in flight and its one pause after a rate limit. The results come back in
the order of the sources; a document that fails (a bad file, a model error) is its LongreadError in its place,
and the others go on. Other options are Reader's (`window`, `kv`, `strategy`, `api_base`, `prompts`, `cache`,
`trace`, ...) and `schema` (as in `ask`); a `checkpointer` must be an async one (LangGraph's AsyncSqliteSaver).
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from .backends import ChatModel, get_model
from .errors import LongreadError
from .reader import Reader, Source
from .results import Result

__all__ = ["aask_many", "ask_many", "asummarize_many", "summarize_many"]


async def _amany(sources: Sequence[Source], question: str | None, model: str | ChatModel, jobs: int,
                 options: dict[str, Any]) -> list[Result | LongreadError]:
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    shared = get_model(model, kv=options.pop("kv", None), api_base=options.pop("api_base", None))
    if options.get("cache") not in (None, False):  # one cache (one SQLite connection) for every document
        from .reader import wrapped_model

        shared = wrapped_model(shared, options.pop("cache"), False)
    schema = options.pop("schema", None)
    slots = asyncio.Semaphore(jobs)

    async def one(source: Source) -> Result | LongreadError:
        async with slots:
            try:
                reader = Reader(source, model=shared, **options)
                return await (reader.aask(question, schema=schema) if question is not None
                              else reader.asummarize(schema=schema))
            except LongreadError as exc:
                return exc

    return list(await asyncio.gather(*(one(source) for source in sources)))


async def aask_many(sources: Sequence[Source], question: str, *, model: str | ChatModel = "local", jobs: int = 4,
                    **options: Any) -> list[Result | LongreadError]:
    """The answer about each source, `jobs` at a time (see the module docstring)."""
    return await _amany(sources, question, model, jobs, options)


async def asummarize_many(sources: Sequence[Source], *, model: str | ChatModel = "local", jobs: int = 4,
                          **options: Any) -> list[Result | LongreadError]:
    return await _amany(sources, None, model, jobs, options)


def ask_many(sources: Sequence[Source], question: str, *, model: str | ChatModel = "local", jobs: int = 4,
             **options: Any) -> list[Result | LongreadError]:
    return asyncio.run(aask_many(sources, question, model=model, jobs=jobs, **options))


def summarize_many(sources: Sequence[Source], *, model: str | ChatModel = "local", jobs: int = 4,
                   **options: Any) -> list[Result | LongreadError]:
    return asyncio.run(asummarize_many(sources, model=model, jobs=jobs, **options))
