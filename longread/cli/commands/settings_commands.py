"""`longread alias ...` and `longread config ...`: the user's settings file (longread.config)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ..command import Command

alias_app = typer.Typer(help="Short names for model strings: `longread alias set fast openai/gpt-4o-mini`, then "
                        "`--model fast`.", no_args_is_help=True)
config_app = typer.Typer(help="Defaults for --model, --window, --strategy and --kv, in the settings file.",
                         no_args_is_help=True)


def _load():
    from ..settings import user_config

    return user_config()


def _save(config) -> None:
    from ..config import ConfigError, save_config

    try:
        save_config(config)
    except (OSError, ConfigError) as exc:
        typer.echo(f"error: {config.path}: cannot write: {getattr(exc, 'strerror', None) or exc}", err=True)
        raise typer.Exit(1) from None


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


@alias_app.command("set", cls=Command)
def alias_set(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The alias, e.g. fast.")],
    model: Annotated[str, typer.Argument(metavar="MODEL", help="The model string it stands for.")],
) -> None:
    """Make NAME stand for MODEL in --model."""
    from ..config import ConfigError

    config = _load()
    try:
        updated = config.with_alias(name, model)
    except ConfigError as exc:
        _fail(exc)
    _save(updated)
    typer.echo(f"{name} -> {model} (in {config.path})")


@alias_app.command("list", cls=Command)
def alias_list(as_json: Annotated[bool, typer.Option("--json", metavar="", help="One JSON object.")] = False) -> None:
    """The aliases and the models they stand for."""
    config = _load()
    if as_json:
        typer.echo(json.dumps(config.aliases, ensure_ascii=False))
        return
    if not config.aliases:
        typer.echo(f"no aliases yet ({config.path}); add one with: longread alias set fast openai/gpt-4o-mini")
    for name, model in sorted(config.aliases.items()):
        typer.echo(f"{name}: {model}")


@alias_app.command("remove", cls=Command)
def alias_remove(name: Annotated[str, typer.Argument(metavar="NAME", help="The alias to remove.")]) -> None:
    """Remove an alias."""
    config = _load()
    if name not in config.aliases:
        typer.echo(f"error: no alias {name!r} ({config.path})", err=True)
        raise typer.Exit(1)
    _save(config.with_alias(name, None))
    typer.echo(f"removed {name}")


@config_app.command("path", cls=Command)
def config_path_command() -> None:
    """Where the settings file is (LONGREAD_CONFIG names another)."""
    from ..config import config_path

    typer.echo(str(config_path()))


@config_app.command("show", cls=Command)
def config_show(as_json: Annotated[bool, typer.Option("--json", metavar="", help="One JSON object.")] = False) -> None:
    """The settings in force from the file."""
    config = _load()
    if as_json:
        typer.echo(json.dumps({"path": str(config.path), **config.to_toml()}, ensure_ascii=False))
        return
    typer.echo(f"# {config.path}" + ("" if config.path.exists() else " (not written yet)"))
    for key, value in config.settings().items():
        typer.echo(f"{key} = {value!r}")
    if config.aliases:
        typer.echo(f"aliases: {', '.join(sorted(config.aliases))}")


@config_app.command("set", cls=Command)
def config_set(
    key: Annotated[str, typer.Argument(metavar="KEY", help="model, window, strategy or kv.")],
    value: Annotated[Optional[str], typer.Argument(metavar="VALUE", help="The value; leave out to remove it.")] = None,
) -> None:
    """Set a default (`longread config set window 8192`); without VALUE, remove it."""
    from ..config import ConfigError

    config = _load()
    try:
        updated = config.with_setting(key, value)
        if key == "kv" and value is not None:
            from ...backends.kv import validate_policy

            try:
                validate_policy(value)
            except ValueError as exc:
                raise ConfigError(f"kv: {exc}") from None
    except ConfigError as exc:
        _fail(exc)
    _save(updated)
    typer.echo(f"{key} = {getattr(updated, key)!r} (in {config.path})" if value is not None else f"removed {key}")


def strategies(as_json: Annotated[bool, typer.Option("--json", metavar="", help="One JSON object per line.")] = False
               ) -> None:
    """The ways of reading --strategy accepts, with what each does."""
    from ...workflows.registry import available_strategies

    rows = available_strategies()
    for name, what in rows.items():
        typer.echo(json.dumps({"strategy": name, "description": what}) if as_json else f"{name:12} {what}")
