"""The class of every longread command: typer's, with two conventions of this command line that typer's parser and
help lack. Given to typer through its `cls=` argument, overriding only click's public Command methods (parse_args,
format_options; typer vendors click from 0.26 on) in the subclass, and reading back only what the commands gave
typer (a metavar): no attribute of typer is replaced, and typer's own help internals, which differ from one release
to the next (0.27 lacks the one this module replaced before), are not used.

- `--ray` alone means `--ray auto`: an option whose value may be left out (`with_optional_values`), which typer's
  parser cannot express (click's `flag_value` on a value option is not passed on).
- An argument's help names it by its metavar (`PATH`) only: typer adds the Python type beside it (`PATH <str>`,
  `RESULTS.jsonl... <list[Path]>`), which tells a person nothing the metavar does not.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand

from .options import OPTIONAL_VALUES


def with_optional_values(args: list[str]) -> list[str]:
    """`--ray` alone (last, or before another option) becomes `--ray auto`."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            return out + list(args[i + 1:])
        if arg in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


class Command(TyperCommand):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_optional_values(list(args)))

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """The Arguments and Options sections, as typer writes them without rich, each argument named by its metavar."""
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record: Any = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):  # every argument of ours sets its metavar (typer.Argument(metavar=))
                arguments.append((param.metavar or param.name.upper(), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
