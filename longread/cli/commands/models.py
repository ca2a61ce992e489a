"""`longread models [PROVIDER] [--json]`: the model strings --model accepts, from the backend registry."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer


def _per_million(usd_per_token: float) -> str:
    return f"${usd_per_token * 1e6:,.2f}" if usd_per_token else "-"


def models(
    provider: Annotated[Optional[str], typer.Argument(metavar="PROVIDER", show_default=False,
                                                      help="List this litellm provider's chat models with their "
                                                      "windows and prices (e.g. openai); or `pull`.")] = None,
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]", show_default=False,
                                                  help="With `pull`: the model to download (qwen2.5-coder-0.5b, "
                                                  "qwen2.5-coder-1.5b, or a Hugging Face hub id).")] = None,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="One JSON object per line (every provider).")] = False,
    every: Annotated[bool, typer.Option("--all", metavar="", help="Every litellm provider, not only the common ones "
                                        "and those whose key is set.")] = False,
) -> None:
    """The model strings --model accepts: local models, aliases, and litellm providers with their prices.

    `longread models pull NAME` downloads a better offline model than the embedded one, once (verified before use).
    """
    if provider == "pull":
        raise typer.Exit(pull(name))
    if name is not None:
        typer.echo(f"error: unexpected argument {name!r} (`longread models PROVIDER` or `longread models pull NAME`)",
                   err=True)
        raise typer.Exit(2)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ...backends import ModelRow, model_rows
    from ...backends.litellm.catalog import KEY_VARIABLES, NO_KEY, chat_models, providers
    from ..settings import user_config

    config = user_config()
    if provider is not None:
        if provider not in providers():
            typer.echo(f"error: {provider!r} is not a provider litellm knows (`longread models` lists them)", err=True)
            raise typer.Exit(1)
        rows = [ModelRow(c.model, "litellm", "", c.window, c.input_cost, c.output_cost) for c in chat_models(provider)]
        title = f"{provider}: {len(rows)} chat models in litellm's price table (USD per million tokens)"
    else:
        rows = model_rows()
        for name, target in sorted(config.aliases.items()):
            rows.append(ModelRow(name, "alias", f"alias of {target}"))
        title = "--model accepts (USD per million tokens; `longread models PROVIDER` lists a provider's models)"
    hidden = 0
    if provider is None and not (every or as_json):
        common = set(KEY_VARIABLES) | NO_KEY
        shown = [r for r in rows if r.backend != "litellm" or r.model.split("/")[0] in common or (r.note.endswith(" set") and not r.note.endswith("not set"))]
        hidden, rows = len(rows) - len(shown), shown
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.to_dict(), ensure_ascii=False))
        return
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in ("--model", "backend", "window", "input", "output", "notes"):
        table.add_column(column, overflow="fold", justify="right" if column in ("window", "input", "output") else "left")
    for row in rows:
        notes = "; ".join(part for part in (row.description, row.note) if part)
        table.add_row(Text(row.model), row.backend, f"{row.window:,}" if row.window else "-",
                      _per_million(row.input_cost), _per_million(row.output_cost),
                      Text(notes, style="" if row.available else "red"))
    console = Console()
    console.print(table)
    if hidden:
        console.print(Text(f"and {hidden} more litellm providers: longread models --all"))
    if provider is None:
        from ...backends.kv import valid_forms

        console.print(Text(f"--kv POLICY (local and hf: models): {valid_forms()}"))


def pull(name: str | None) -> int:
    """`longread models pull NAME`: the exit code."""
    from ...backends.local.pull import PULLABLE, pull as pull_pullable, pull_from_hub
    from ..display.console import note, stderr_console
    from ...errors import ModelError

    err = stderr_console()
    if not name:
        lines = [f"  {n}: {p.title}, {p.download_mb:,} MB" for n, p in PULLABLE.items()]
        note(err, "error: name the model to pull:", "red")
        for line in lines + ["  or a Hugging Face hub id, e.g. Qwen/Qwen2.5-1.5B-Instruct"]:
            note(err, line)
        return 2
    say = lambda line: note(err, line)  # noqa: E731
    try:
        path = pull_pullable(name, say) if name in PULLABLE or "/" not in name else pull_from_hub(name, say)
    except ModelError as exc:
        note(err, f"error: {exc}", "red")
        return 1
    except KeyboardInterrupt:
        note(err, "pull interrupted: nothing was kept; run it again to start over", "yellow")
        return 130
    typer.echo(str(path))
    return 0
