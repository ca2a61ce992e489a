"""The settings of one command: options, else environment, else the config file, else the defaults."""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ..workflows.registry import DEFAULT_STRATEGY
from .config import Config, ConfigError, load_config

DEFAULT_MODEL = "local"
# Documents read at once by default with an API model: providers serve many requests at once, and four chains
# of calls stay well within the default cap of 8 calls in flight. The local engine runs one forward pass at a
# time, so more documents at once would only share it.
DEFAULT_API_JOBS = 4
DEFAULT_CALLS_IN_FLIGHT = 8


@dataclass
class Verbosity:
    """--verbose / --debug of the whole command line (set by the app's callback)."""

    verbose: bool = False
    debug: bool = False


VERBOSITY = Verbosity()


def configure_logging(verbose: bool, debug: bool) -> None:
    """Warnings always (retries, fallbacks); --verbose adds longread's info lines, --debug everything and tracebacks.

    Through rich's handler on stderr, so log lines land above a live display instead of on it."""
    from rich.logging import RichHandler

    from .display.console import stderr_console

    VERBOSITY.verbose, VERBOSITY.debug = verbose or debug, debug
    handler = RichHandler(console=stderr_console(), show_time=debug, show_path=debug, markup=False,
                          rich_tracebacks=debug, show_level=True)
    ours = logging.getLogger("longread")
    ours.handlers[:] = [handler]
    ours.propagate = False
    ours.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    if debug:  # libraries' logs too (litellm, httpx, pypdf, ...)
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.DEBUG)
    else:  # a warning is one line saying what happened, not Python's file, line number and source line
        warnings.showwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: object = None, line: str | None = None) -> None:
    from .display.console import note, stderr_console

    note(stderr_console(), f"warning: {message}", "yellow")


def default_workspace() -> Path:
    """The user cache folder (~/.cache/longread/workspace on Linux), shared by every run.

    Not `.longread/` in the current folder: thread ids come from the document's content and the settings, so
    one workspace resumes a run from wherever it is started again, and project folders stay clean.
    """
    from ..backends.local.weights import cache_root

    return cache_root() / "workspace"


@dataclass(frozen=True)
class Settings:
    command: str  # ask | summarize
    model: str  # the model string, an alias resolved
    window: int | None
    kv: str | None
    strategy: str
    as_json: bool = False
    dry_run: bool = False
    force: bool = False
    workspace: Path = Path(".")
    quiet: bool = False
    stream: bool = True
    writes_files: bool = False  # summaries go to --out, not stdout
    alias: str | None = None  # the alias the model string came from
    api_base: str | None = None  # --api-base: the server of an API model
    jobs: int | None = None  # --jobs: documents read at once (None: the default for the model)
    ray: str | None = None  # --ray: the Ray cluster's address (`auto`: start or join a local instance)
    timeout: float | None = None  # --timeout: seconds per model call (API models); None: the backend's default
    trace: bool = False  # --trace: what every agent wrote and what the checks made of it, on stderr
    schema: Any = None  # --schema: the answer as JSON for this structured.OutputSchema (ask)
    cache: bool = False  # --cache: the completion cache, WORKSPACE/completions.sqlite
    trace_otel: bool = False  # --trace-otel: OpenTelemetry spans over OTLP
    window_source: str | None = None  # the settings file the window came from (None: --window, or the default)
    gpu_memory: float | None = None  # --gpu-memory: share of the GPU the local engine may use (None: its default)

    @property
    def api_model(self) -> bool:
        from ..backends import backend_for

        return backend_for(self.model).name == "litellm"

    def workers(self) -> int:
        """Documents read at once: --jobs, else DEFAULT_API_JOBS for an API model and 1 for the others."""
        return self.jobs or (DEFAULT_API_JOBS if self.api_model else 1)

    def model_options(self) -> dict[str, object]:
        """What `backends.get_model` gets besides the model string (the options that were given)."""
        options: dict[str, object] = {"kv": self.kv}
        if self.api_base:
            options["api_base"] = self.api_base
        if self.timeout is not None:
            options["timeout"] = self.timeout
        if self.gpu_memory is not None and not self.api_model:
            options["gpu_memory"] = self.gpu_memory
        if self.api_model and self.workers() > DEFAULT_CALLS_IN_FLIGHT:
            # One cap for every document's calls (multipath's paths too): --jobs 16 may have 16 calls in flight.
            options["max_concurrency"] = self.workers()
        return options

    @property
    def debug(self) -> bool:
        return VERBOSITY.debug


def user_config() -> Config:
    try:
        return load_config()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def resolve(command: str, *, model: str | None, window: int | None, kv: str | None, strategy: str | None,
            workspace: Path | None, api_base: str | None = None, jobs: int | None = None, ray: str | None = None,
            timeout: float | None = None, schema: Any = None, gpu_memory: float | None = None,
            **flags: bool) -> Settings:
    config = user_config()
    given = model or config.model or DEFAULT_MODEL
    resolved = config.resolve_model(given)
    if kv is None and config.kv is not None:  # an option was checked by its callback; the file's is checked here
        from ..backends.kv import validate_policy

        try:
            validate_policy(config.kv)
        except ValueError as exc:
            typer.echo(f"error: {config.path}: kv: {exc}", err=True)
            raise typer.Exit(2) from None
        kv = config.kv
    return Settings(
        command=command, model=resolved, window=window or config.window, kv=kv,
        strategy=strategy or config.strategy or DEFAULT_STRATEGY, workspace=workspace or default_workspace(),
        alias=given if resolved != given else None, api_base=api_base or None, jobs=jobs,
        ray=ray or None, timeout=timeout, schema=schema, gpu_memory=gpu_memory,
        window_source=str(config.path) if not window and config.window else None, **flags,
    )


def fitted_window(settings: Settings, say) -> Settings:  # noqa: ANN001  (say: Callable[[str], None])
    """A window from the settings file that is larger than the model's context is lowered to it, with a note naming
    the file (`longread config set window 8192` is a README step; it must not break every later `local` run). An
    explicit --window that is too large stays an error (the model says so when it loads)."""
    from dataclasses import replace

    from ..backends.registry import known_context_window

    if settings.window_source is None or settings.window is None:
        return settings
    context = known_context_window(settings.model)
    if context is None or settings.window <= context:
        return settings
    say(f"note: window {settings.window} (from {settings.window_source}) is larger than the context window of "
        f"{settings.model} ({context}): using {context}")
    return replace(settings, window=context)


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
