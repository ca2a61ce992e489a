"""`longread runs [--json]` lists past runs from the runs log; `longread runs show ID` prints one."""

from __future__ import annotations

from typing import Annotated

import typer

from ..command import Command
from ..options import WorkspaceOption

app = typer.Typer(help="Past runs: document, question, model, strategy, tokens, cost, time, and where the output is.",
                  invoke_without_command=True, no_args_is_help=False)


def _log(workspace):
    from ..run.runlog import RunLog, runs_path
    from ..settings import default_workspace

    return RunLog(runs_path(workspace or default_workspace()))


def _read(workspace, read):  # noqa: ANN001
    """`read(log)`, or one line and exit 1 when the runs log cannot be read (damaged, not a database)."""
    import sqlite3

    log = _log(workspace)
    try:
        return read(log)
    except (OSError, sqlite3.Error) as exc:
        from ..display.console import note, stderr_console

        note(stderr_console(), f"error: the runs log {log.path} cannot be read ({exc}); move it away to start a new "
                               "one", "red")
        raise typer.Exit(1) from None


def _short(path: str) -> str:
    """A path relative to the current folder when it is below it (the table has little room)."""
    import os

    if "://" in path or path.startswith("<"):
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def hits(record) -> str:  # noqa: ANN001
    """Calls answered from the completion cache, of all the run's calls (`7/7`: the run called no model)."""
    return f"{record.cache_hits}/{record.calls}" if record.cache_hits else "-"


@app.callback()
def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="One JSON object per run per line.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """List past runs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..display.console import json_line, printable
    from ..display.printing import cost

    records = _read(workspace, lambda log: log.recent(limit))
    if as_json:
        for record in records:
            typer.echo(json_line(record.to_dict(with_result=False)))
        return
    if not records:
        typer.echo("no runs yet (every ask and summarize is logged when it ends)")
        return
    # Light borders and a floor under the text columns: at 120 columns a long model or strategy name no longer
    # squeezes the document and the question to two characters (they wrap instead).
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    # (no `command` column: a summary says so in the question's place)
    widths = {"document": (12, None), "question": (12, None), "output": (12, None), "model": (6, 12),
              "strategy": (6, 12)}
    # `hits` only when a listed run used the completion cache: the table has little room (120 columns)
    with_hits = any(r.cache_hits for r in records)
    columns = ["id", "when", "document", "question", "model", "strategy", "tokens", "hits", "cost", "time", "output"]
    for column in columns if with_hits else [c for c in columns if c != "hits"]:
        least, most = widths.get(column, (None, None))
        table.add_column(column, overflow="fold", no_wrap=column not in widths, min_width=least, max_width=most,
                         justify="right" if column in ("id", "tokens", "hits", "cost", "time") else "left")
    for r in records:
        when = r.to_dict()["started"][5:16].replace("T", " ")
        output = _short(r.output) if r.output else ("failed: " + (r.error or "") if r.status == "failed" else "stdout")
        asked = r.question if r.question is not None else f"({r.command})"
        cells = [str(r.id), when, Text(printable(_short(r.document))), Text(printable(asked)),
                 Text(printable(r.model)), printable(r.strategy or "-"), f"{r.tokens:,}",
                 *([hits(r)] if with_hits else []), cost(r.cost_usd), f"{r.seconds:.1f} s",
                 Text(printable(output), style="red" if r.status == "failed" else "")]
        table.add_row(*cells)
    Console().print(table)


@app.command(cls=Command)
def show(
    run_id: Annotated[int, typer.Argument(metavar="ID", help="The run's id (the first column of `longread runs`).")],
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="The whole record, result included.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Print one run: its settings, usage, and the answer or summary it wrote."""
    from ..display.console import json_line, printable
    from ..display.printing import citation_lines, cost, usage_line

    record = _read(workspace, lambda log: log.get(run_id))
    if record is None:
        typer.echo(f"error: no run {run_id} in the runs log (`longread runs` lists them)", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json_line(record.to_dict()))
        return
    d = record.to_dict(with_result=False)

    def echo(text: str = "", keep: str = "") -> None:
        typer.echo(printable(text, keep=keep))

    echo(f"run {record.id}: {record.command} {record.document}" + (f" {record.question!r}" if record.question else ""))
    echo(f"  {d['started']}, {record.seconds:.1f} s, {record.status}; model {record.model}, strategy "
               f"{record.strategy or '-'}, window {record.window or '-'}, kv {record.kv or '-'}")
    cached = f" ({record.cache_hits} from the completion cache)" if record.cache_hits else ""
    echo(f"  {record.calls} calls{cached}, {record.tokens:,} tokens, {cost(record.cost_usd)}; output: "
               f"{record.output or 'stdout'}")
    if record.error:
        echo(f"  error: {record.error}")
    if record.result and record.status == "done":
        echo()
        echo(record.text.strip(), keep="\n\t")
        echo()
        for line in citation_lines(record.result) + [usage_line(record.result)]:
            echo(line)
