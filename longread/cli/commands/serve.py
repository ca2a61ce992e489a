"""`longread serve --model M`: the local engine behind an OpenAI-compatible HTTP server (longread/serve/)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Optional

import typer

from ..options import CacheOption, GpuMemoryOption, KvOption, ModelOption, TraceOtelOption, WindowOption, WorkspaceOption
from ..options import _finite_seconds


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: ModelOption = None,
    kv: KvOption = None,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS",
                                      help="Address to listen on; 0.0.0.0 reaches other machines.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", metavar="PORT", min=1, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        Optional[str],
        typer.Option("--api-key", metavar="KEY", envvar="LONGREAD_SERVE_API_KEY", show_default=False,
                     help="Clients must send `Authorization: Bearer KEY` (longread clients: set OPENAI_API_KEY). "
                     "LONGREAD_SERVE_API_KEY keeps it off the command line."),
    ] = None,
    window: WindowOption = None,
    name: Annotated[
        Optional[str],
        typer.Option("--name", metavar="NAME", show_default=False,
                     help="The model name clients send (default: `local`, or the folder's name for hf:PATH)."),
    ] = None,
    cache: CacheOption = False,
    trace_otel: TraceOtelOption = False,
    workspace: WorkspaceOption = None,
    max_request_bytes: Annotated[
        Optional[int],
        typer.Option("--max-request-bytes", metavar="BYTES", min=1, show_default=False,
                     help="A larger request body is refused (413) unread (default: 64 bytes per token of the "
                     "window, at least 1 MiB)."),
    ] = None,
    max_prompt_tokens: Annotated[
        Optional[int],
        typer.Option("--max-prompt-tokens", metavar="TOKENS", min=1, show_default=False,
                     help="A longer prompt is refused (413) before it waits for the engine (default: the window)."),
    ] = None,
    request_timeout: Annotated[
        Optional[float],
        typer.Option("--request-timeout", metavar="SECONDS", min=0.01, callback=_finite_seconds, show_default=False,
                     help="A request still unanswered after this long, queue included, is stopped (504; default "
                     "600)."),
    ] = None,
    gpu_memory: GpuMemoryOption = None,
) -> None:
    """Serve a local model over HTTP, OpenAI-compatible: `--model openai/NAME --api-base http://HOST:PORT/v1`."""
    from ... import backends
    from ..display.console import note, stderr_console
    from ...errors import LongreadError, ModelError
    from ...serve import missing_extra, run_server, served_name
    from ..run.jobs import one_line
    from ..settings import user_config

    err = stderr_console()
    why = missing_extra()
    if why:
        note(err, f"error: {why}", "red")
        raise typer.Exit(1)
    config = user_config()
    given = model or config.model or "local"
    resolved = config.resolve_model(given)
    kv = kv or config.kv
    try:
        if not backends.is_local_model(resolved):
            raise ModelError(f"--model {resolved}: longread serve runs local models (`local`, `hf:PATH`); an API "
                             "model is served by its provider already")
        backends.check_model(resolved, need_key=True)
        engine = backends.get_model(resolved, kv=kv, **({"gpu_memory": gpu_memory} if gpu_memory else {}))
    except (LongreadError, ValueError, ImportError, OSError) as exc:
        note(err, f"error: {one_line(str(exc))}", "red")
        raise typer.Exit(1) from None
    if window and window > engine.context_window:
        note(err, f"error: --window {window} is larger than the context window of {engine.name} "
                  f"({engine.context_window})", "red")
        raise typer.Exit(1)
    from ...serve.app import create_app
    from ...serve.limits import DEFAULT_REQUEST_TIMEOUT, ServerLimits

    engine, export = _client_conventions(engine, cache, trace_otel, workspace, err)
    served = name or served_name(given)
    limits = ServerLimits(max_request_bytes, max_prompt_tokens, request_timeout or DEFAULT_REQUEST_TIMEOUT)
    app = create_app(engine, name=served, aliases=tuple({resolved, given} - {served}), api_key=api_key,
                     window=window, limits=limits)
    if not _is_loopback(host) and not api_key:
        note(err, f"warning: --host {host} without --api-key: anyone who reaches this machine can use the model",
             "yellow")
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    note(err, f"serving {engine.name} as {served!r} (kv {getattr(engine, 'kv', 'full')}, window "
              f"{app.state.engine.window}) on {base}{', API key required' if api_key else ''}")
    note(err, f"  limits: {limits.body_cap(app.state.engine.window):,} bytes a request, "
              f"{limits.max_prompt_tokens or app.state.engine.window:,} prompt tokens, {limits.request_timeout:g} s")
    # No --window in the hint: longread clients take the server's window and tokenizer from /v1/models.
    note(err, f"  longread ask FILE QUESTION --model openai/{served} --api-base {base}   (Ctrl-C stops)")
    try:
        run_server(app, host, port)
    finally:
        if export is not None:
            export.shutdown()


def _client_conventions(engine, cache: bool, trace_otel: bool, workspace, err):  # noqa: ANN001, ANN202
    """The served model behind the completion cache (--cache) and OpenTelemetry spans (--trace-otel); the span
    export to shut down at the end, or None."""
    from ..display.console import note

    if cache:
        from ...backends.cache import CACHE_FILE, CachedModel
        from ..settings import default_workspace

        engine = CachedModel(engine, (workspace or default_workspace()) / CACHE_FILE)
    if not trace_otel:
        return engine, None
    from ...tracing import TracedModel, TracingUnavailable, configure

    try:
        export = configure()
    except TracingUnavailable as exc:
        note(err, f"error: {exc}", "red")
        raise typer.Exit(1) from None
    return TracedModel(engine, export.tracer()), export
