"""`longread summarize PATH... [--out DIR]`: summaries to stdout, or to DIR mirroring the inputs' tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import (
    ApiBaseOption, CacheOption, DryRunOption, ForceOption, GpuMemoryOption, JobsOption, JsonOption, KvOption,
    ModelOption, NoStreamOption, QuietOption, RayOption, StrategyOption, TimeoutOption, TraceOption, TraceOtelOption,
    WindowOption, WorkspaceOption,
)


def summarize(
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", show_default=False,
                                               help="Documents and folders (every supported file below them), `-` "
                                               "for standard input, http(s) URLs.")],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", metavar="DIR", file_okay=False, show_default=False,
                     help="Write DIR/<path relative to PATH>.summary.md and .summary.json; a rerun skips those made "
                     "with the same settings. Without it, summaries go to stdout."),
    ] = None,
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
    cache: CacheOption = False,
    trace_otel: TraceOtelOption = False,
    gpu_memory: GpuMemoryOption = None,
) -> None:
    """Summarize documents and folders of them."""
    from ..run.executors import executor_for
    from ..run.runner import run
    from ..settings import resolve

    settings = resolve("summarize", model=model, window=window, kv=kv, strategy=strategy, workspace=workspace,
                       api_base=api_base, jobs=jobs, ray=ray, timeout=timeout, gpu_memory=gpu_memory,
                       as_json=as_json, dry_run=dry_run, force=force, quiet=quiet, stream=not no_stream,
                       writes_files=out is not None, trace=trace, cache=cache, trace_otel=trace_otel)
    raise typer.Exit(run(list(paths), None, settings, out, executor_for(settings)))
