"""`longread ask PATH QUESTION`: answer a question about a document, or about each document of a folder."""

from __future__ import annotations

from typing import Annotated

import typer

from ..options import (
    ApiBaseOption, CacheOption, DryRunOption, ForceOption, GpuMemoryOption, JobsOption, JsonOption, KvOption,
    ModelOption, NoStreamOption, QuietOption, RayOption, SchemaOption, StrategyOption, TimeoutOption, TraceOption,
    TraceOtelOption, WindowOption, WorkspaceOption,
)


def ask(
    path: Annotated[str, typer.Argument(metavar="PATH", show_default=False,
                                        help="A document, a folder (every supported file below it), `-` for "
                                        "standard input, or an http(s) URL.")],
    question: Annotated[str, typer.Argument(metavar="QUESTION", help="The question, in quotes.", show_default=False)],
    model: ModelOption = None,
    window: WindowOption = None,
    kv: KvOption = None,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
    dry_run: DryRunOption = False,
    force: ForceOption = False,
    workspace: WorkspaceOption = None,
    quiet: QuietOption = False,
    no_stream: NoStreamOption = False,
    api_base: ApiBaseOption = None,
    jobs: JobsOption = None,
    ray: RayOption = None,
    timeout: TimeoutOption = None,
    trace: TraceOption = False,
    schema: SchemaOption = None,
    cache: CacheOption = False,
    trace_otel: TraceOtelOption = False,
    gpu_memory: GpuMemoryOption = None,
) -> None:
    """Answer a question about a document (or each document of a folder), with citations and usage."""
    from ..run.executors import executor_for
    from ..run.runner import run
    from ..settings import resolve

    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    settings = resolve("ask", model=model, window=window, kv=kv, strategy=strategy, workspace=workspace,
                       api_base=api_base, jobs=jobs, ray=ray, timeout=timeout, schema=schema, gpu_memory=gpu_memory,
                       as_json=as_json, dry_run=dry_run, force=force, quiet=quiet,
                       stream=not no_stream and schema is None,  # the JSON object is printed, not the prose
                       trace=trace, cache=cache, trace_otel=trace_otel)
    raise typer.Exit(run([path], question, settings, None, executor_for(settings)))
