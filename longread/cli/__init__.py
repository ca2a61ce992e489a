"""The command line: sentences over files, folders, standard input and URLs (`longread.cli:app`).

    longread ask book.txt "Who is the narrator?"
    longread summarize reports/ --out summaries/
    longread ask book.txt "..." --model openai/gpt-4o-mini --dry-run     # segments, calls, tokens, cost; no call
    longread models | longread runs | longread alias set fast openai/gpt-4o-mini

The application on top of the library: commands/ has one module per command (ask, summarize, chat, models, runs,
serve, alias/config/strategies, eval); run/ the runs they start (runner.py for ask and summarize, the chat session,
the files they keep); display/ what a person sees (console.py: results on stdout, never on a progress line; progress
and notes on stderr). Importing this package imports only typer and the option definitions: every command imports
what it needs when it runs, so `longread --help` starts in a fraction of a second.

The models are built through `longread.backends.get_model` at call time: tests swap it for a MockModel there.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from .commands.ask import ask
from .commands.chat import chat
from .commands.models import models
from .command import Command, with_optional_values
from .commands.runs import app as runs_app
from .commands.serve import serve
from .commands.settings_commands import alias_app, config_app, strategies
from .commands.summarize import summarize


app = typer.Typer(
    name="longread",
    help="Read documents far longer than a model's window: answer questions about them or summarize them.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    context_settings={"help_option_names": ["-h", "--help"]},
    # click's plain help, as `llm` prints it: rich's help panels import markdown-it and rich's traceback and
    # pretty-printing, which would double the time `longread --help` takes.
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # locals may hold model options; never show them
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"longread {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="",
                                          help="Say more: retries, fallbacks and each step's details on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", metavar="",
                                        help="Everything --verbose says, library logs, and tracebacks of errors.")] = False,
) -> None:
    """Read documents far longer than a model's window: answer questions about them or summarize them."""
    from .settings import configure_logging

    configure_logging(verbose, debug)


READS = {"no_args_is_help": True, "cls": Command}
app.command(**READS)(ask)
app.command(**READS)(summarize)
app.command(**READS)(chat)
app.command(cls=Command)(models)
app.command(cls=Command)(serve)
app.add_typer(runs_app, name="runs")
app.add_typer(alias_app, name="alias")
app.add_typer(config_app, name="config")
app.command(cls=Command)(strategies)
from .commands.eval import app as eval_app; app.add_typer(eval_app, name="eval")  # noqa: E402,E702

__all__ = ["app", "with_optional_values"]
