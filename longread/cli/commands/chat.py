"""`longread chat PATH`: talk about a document (the session itself is cli/run/chat_session.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import ApiBaseOption, JsonOption, KvOption, ModelOption, NoStreamOption, QuietOption, StrategyOption
from ..options import TimeoutOption, WindowOption, WorkspaceOption


def chat(
    path: Annotated[str, typer.Argument(metavar="PATH", show_default=False,
                                        help="The document to talk about: a file, or an http(s) URL.")],
    session: Annotated[
        Optional[str],
        typer.Option("--session", "-s", metavar="NAME", show_default=False,
                     help="Name of the session; reopening it restores its memory and history "
                     "(default: derived from the document's content)."),
    ] = None,
    model: ModelOption = None,
    window: WindowOption = None,
    kv: KvOption = None,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    no_stream: NoStreamOption = False,
    api_base: ApiBaseOption = None,
    workspace: WorkspaceOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """Talk about a document: it is read once, then questions are answered from memory (or by reading it again
    when memory cannot answer). Commands: /memory /sources /save FILE /reset /help /quit. Lines on a piped stdin
    are questions, one a line (--json: one JSON object per answer)."""
    from ..run.chat_session import ChatSettings, run_chat
    from ..run.runner import FatalError, preflight
    from ..settings import fitted_window, resolve

    settings = resolve("chat", model=model, window=window, kv=kv, strategy=strategy, workspace=workspace,
                       api_base=api_base, timeout=timeout, as_json=as_json, quiet=quiet, stream=not no_stream)
    try:
        preflight(settings)
    except FatalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if Path(path).is_dir():  # `ask` and `summarize` read folders; a chat is about one document
        typer.echo(f"error: {path}: is a folder; a chat reads one document (name one of its files, or use "
                   "`longread ask FOLDER QUESTION` for every file in it)", err=True)
        raise typer.Exit(1)
    settings = fitted_window(settings, lambda message: typer.echo(message, err=True))
    raise typer.Exit(run_chat(ChatSettings.of(settings, path=path, session=session)))
