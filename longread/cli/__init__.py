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
import typer.core

from .._version import __version__
from .commands.ask import ask
from .commands.chat import chat
from .commands.models import models
from .options import OPTIONAL_VALUES
from .commands.runs import app as runs_app
from .commands.serve import serve
from .commands.settings_commands import alias_app, config_app, strategies
from .commands.summarize import summarize


def _argument_type(self, ctx):  # noqa: ANN001
    """typer prints Python annotations beside arguments (`PATH <list[str]>`); the metavar already says what to type."""
    return None


_option_type = typer.core.TyperOption.display_type_rich


def _option_type_for_people(self, ctx):  # noqa: ANN001
    """A flag takes no value, so it shows none (typer shows `<bool>`); other options show their metavar."""
    return None if self.is_flag else _option_type(self, ctx)


def with_optional_values(args: list[str]) -> list[str]:
    """`--ray` alone (last, or before another option) becomes `--ray auto`: an option whose value may be left out,
    which typer's parser cannot express (click's `flag_value` on a value option is not passed on)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            return out + list(args[i + 1:])
        if arg in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


_parse_args = typer.core.TyperCommand.parse_args


def _parse_args_with_optional_values(self, ctx, args):  # noqa: ANN001
    return _parse_args(self, ctx, with_optional_values(list(args)))


typer.core.TyperCommand.parse_args = _parse_args_with_optional_values  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]
typer.core.TyperOption.display_type_rich = _option_type_for_people  # type: ignore[method-assign]

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


READS = {"no_args_is_help": True}
app.command(**READS)(ask)
app.command(**READS)(summarize)
app.command(**READS)(chat)
app.command()(models)
app.command()(serve)
app.add_typer(runs_app, name="runs")
app.add_typer(alias_app, name="alias")
app.add_typer(config_app, name="config")
app.command()(strategies)
from .commands.eval import app as eval_app; app.add_typer(eval_app, name="eval")  # noqa: E402,E702

__all__ = ["app"]
