"""`longread eval`: build cases, run them under settings, and report.

    longread eval needles --book moby_dick.txt --lengths 8000 32000 --depths 0 0.5 1 --seed 7 --out needles/
    longread eval dataset quality ../data/leval/quality.jsonl --out quality/
    longread eval needles/cases.jsonl --strategy chain --strategy rag --model local --window 4096 --out r.jsonl
    longread eval report r.jsonl --out report/

`longread eval CASES.jsonl ...` is `longread eval run CASES.jsonl ...`: a first argument that is not a subcommand
is taken as the cases file. Only typer is imported here; each command imports what it needs when it runs, so
`longread --help` stays fast.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from ..command import Command

from ..options import GpuMemoryOption

EXIT_INTERRUPTED = 130


class EvalGroup(TyperGroup):
    """A group whose default command is `run`: `eval CASES.jsonl ...` means `eval run CASES.jsonl ...`.

    Written by hand (a few lines) because click-default-group's DefaultGroup is a plain click group, which
    typer's own group class and help formatting cannot be combined with cleanly.
    """

    default = "run"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


class GreedyOptions(Command):
    """Lets `--lengths 8000 32000 --depths 0 0.5 1` give several values after one option (click takes one value
    per occurrence): the values up to the next option become repeated occurrences."""

    greedy = ("--lengths", "--depths", "--sizes")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        expanded: list[str] = []
        current: str | None = None
        for arg in args:
            if arg in self.greedy:
                current = arg
                continue
            if current is not None and not arg.startswith("--"):
                for value in filter(None, arg.split(",")):
                    expanded += [current, value]
                continue
            current = None
            expanded.append(arg)
        return super().parse_args(ctx, expanded)


app = typer.Typer(
    name="eval",
    cls=EvalGroup,
    help="Measure answer quality: build cases (needles, datasets), run them under strategies x models x windows x "
    "kv, and report.\n\n"
    "longread eval CASES.jsonl --strategy NAME [--strategy NAME ...] --model M --window W [--kv P] "
    "[--limit N] [--jobs N] --out RESULTS.jsonl\n\n"
    "longread eval needles --book FILE --lengths TOKENS... --depths D... --seed S --out DIR\n\n"
    "longread eval report RESULTS.jsonl... --out DIR\n\n"
    "`longread eval CASES.jsonl ...` is short for `longread eval run CASES.jsonl ...`. See docs/evaluation.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _fail(message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False).print(Text(f"error: {message}", style="red"), soft_wrap=True)
    raise typer.Exit(1)


def _checked_kvs(policies: Optional[list[str]]) -> Optional[list[str]]:
    if policies:
        from ...backends.kv import validate_policy

        for policy in policies:
            try:
                validate_policy(policy)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from exc
    return policies


def _checked_strategies(names: list[str]) -> list[str]:
    from ...eval.runner import check_strategies

    try:
        check_strategies(names)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return names


@app.command("run", cls=Command)
def run_command(
    cases: Annotated[Path, typer.Argument(metavar="CASES.jsonl", show_default=False,
                                          help="The cases (see docs/evaluation.md for the format).")],
    strategy: Annotated[list[str], typer.Option("--strategy", "-s", metavar="NAME", show_default=False,
                                                callback=_checked_strategies,
                                                help="A way of reading (chain, multipath, rag, truncate, full, "
                                                "auto, lookback, ...); repeat it to compare several.")],
    window: Annotated[list[int], typer.Option("--window", "-w", min=1, metavar="W", show_default=False,
                                              help="Tokens per call; repeat it to compare windows.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="RESULTS.jsonl", dir_okay=False, show_default=False,
                                      help="The results, one JSON line per case per setting; an existing file is "
                                      "resumed: what it holds is not run again.")],
    model: Annotated[list[str], typer.Option("--model", "-m", metavar="M",
                                             help="`local`, `hf:PATH`, `mock[:N]` or a litellm model; repeat it to "
                                             "compare models (each is loaded once).")] = ["local"],  # noqa: B006
    kv: Annotated[Optional[list[str]], typer.Option("--kv", metavar="P", callback=_checked_kvs, show_default=False,
                                                    help="KV cache policy of local models (full, quant:4, ...); "
                                                    "repeat it to compare policies.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, metavar="N", show_default=False,
                                                 help="Only the first N cases of the file.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, metavar="N",
                                      help="Cases run at once. A local model serves them in one process: their "
                                      "calls decode together in its batcher.")] = 1,
    gpu_memory: GpuMemoryOption = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors",
                                               help="Run again the cases that failed in an earlier run.")] = False,
    checkpoints: Annotated[Optional[Path], typer.Option(
        "--checkpoints", metavar="FILE", dir_okay=False, show_default=False,
        help="Keep every worker step in this SQLite file, so a long case killed half-way resumes there (keep one "
        "file per results file: a finished thread is answered from it without calls).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run CASES.jsonl under every strategy x model x window x kv, appending to RESULTS.jsonl (resumable)."""
    from rich.console import Console
    from rich.text import Text

    from ...eval.cases import CaseError, load_cases
    from ...eval.runner import run_eval, settings_of
    from ..display.console import note
    from ..display.eval_progress import EvalProgress
    from ..run.workspace import WorkspaceError, open_checkpointer

    try:
        loaded = load_cases(cases)
    except CaseError as exc:
        _fail(str(exc))
    err = Console(stderr=True, highlight=False)
    settings = settings_of(strategy, model, window, kv or [None])
    progress = EvalProgress(0, console=err, enabled=not quiet)
    try:
        with ExitStack() as stack:
            # The runs' checked opener: a damaged file is moved aside (a warning), one that cannot be written is
            # one line before any case runs; the saver's own lock guards its connection across the --jobs threads.
            saver = stack.enter_context(open_checkpointer(checkpoints, lambda message: note(err, message, "yellow"))
                                        ) if checkpoints else None
            stack.enter_context(progress)
            summary = run_eval(loaded, settings, out, jobs=jobs, limit=limit, retry_errors=retry_errors,
                               progress=progress, on_note=progress.print, checkpointer=saver, gpu_memory=gpu_memory)
    except KeyboardInterrupt:
        from ...backends import stop_local_engines

        stop_local_engines()
        err.print(Text(f"interrupted after {progress.done} case(s); finished ones are in {out}: run the same "
                       "command again to go on where it stopped.", style="yellow"), soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except WorkspaceError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{out}: {exc.strerror or exc}")
    failed = f", {summary.failed} failed (recorded with their error)" if summary.failed else ""
    err.print(Text(f"{summary.ran} run{failed}, {summary.skipped} already done, of {summary.cases}; results in "
                   f"{out}"), soft_wrap=True)
    raise typer.Exit(1 if summary.failed or summary.models_failed else 0)


def _tokens(value: str) -> int:
    text = value.strip().lower().replace("_", "")
    try:
        return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of tokens (e.g. 8000 or 8k)") from None


@app.command("needles", cls=GreedyOptions)
def needles_command(
    book: Annotated[Path, typer.Option("--book", metavar="FILE", exists=True, dir_okay=False, show_default=False,
                                       help="The haystack: a long text (.txt .md .html .pdf .epub).")],
    lengths: Annotated[list[str], typer.Option("--lengths", metavar="TOKENS...", show_default=False,
                                               help="Document lengths in o200k tokens (8000 or 8k), several.")],
    depths: Annotated[list[float], typer.Option("--depths", metavar="D...", min=0.0, max=1.0, show_default=False,
                                                help="Where the needle goes, 0 (start) to 1 (end), several.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", file_okay=False, show_default=False,
                                      help="Writes DIR/cases.jsonl and DIR/documents/.")],
    seed: Annotated[int, typer.Option("--seed", metavar="S", help="Same seed, same needles and files.")] = 0,
    repeats: Annotated[int, typer.Option("--repeats", min=1, metavar="N",
                                         help="Different needles per length, depth and kind.")] = 1,
    kind: Annotated[Optional[list[str]], typer.Option("--kind", metavar="KIND", show_default=False,
                                                      help="Only these kinds: single, pair, distractor, aggregate "
                                                      "(default: the first three).")] = None,
    sizes: Annotated[Optional[list[int]], typer.Option("--sizes", metavar="K...", min=1, max=200, show_default=False,
                                                       help="Aggregate cases: facts per document, several "
                                                       "(default: 5 10 20).")] = None,
) -> None:
    """Write needle-in-a-haystack cases: single facts, two facts to combine, distractors one detail apart, and
    aggregates (many facts to list or count)."""
    from ...errors import LongreadError
    from ...eval.needles import AGGREGATE_SIZES, KINDS, write_needles

    try:
        target, count = write_needles(book, [_tokens(v) for v in lengths], depths, seed, out, repeats=repeats,
                                      kinds=tuple(kind or KINDS), sizes=tuple(sizes or AGGREGATE_SIZES))
    except LongreadError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {count} cases to {target} (documents in {target.parent / 'documents'})")


@app.command("dataset", cls=Command)
def dataset_command(
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                        help="quality, sci_fi, squality or longbench_v2.")],
    source: Annotated[Path, typer.Argument(metavar="FILE", show_default=False, help="The set's published JSONL file.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", file_okay=False, show_default=False,
                                      help="Writes DIR/cases.jsonl and each document once in DIR/documents/.")],
) -> None:
    """Turn a published long-document set into cases (each document written once)."""
    from ...eval.cases import CaseError
    from ...eval.datasets import build_dataset

    try:
        target, count, documents = build_dataset(name, source, out)
    except CaseError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {count} cases to {target} ({documents} documents in {target.parent / 'documents'})")


@app.command("report", cls=Command)
def report_command(
    results: Annotated[list[Path], typer.Argument(metavar="RESULTS.jsonl...", show_default=False,
                                                  help="One or more results files of `longread eval`.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", file_okay=False, show_default=False,
                                      help="Writes DIR/report.md and its PNG plots.")],
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", metavar="FILE", dir_okay=False, show_default=False,
        help="Also writes the scores (with intervals and cost) per setting, dataset and needle length as a "
             "benchmark file: {benchmark, machine, command, date, results}.")] = None,
    machine: Annotated[str, typer.Option("--machine", metavar="TEXT",
                                         help="The machine the results came from, for --json.")] = "unstated",
    command: Annotated[str, typer.Option("--command", metavar="TEXT",
                                         help="The command that made the results, for --json.")] = "unstated",
) -> None:
    """Write a Markdown report (scores with intervals, cost per case) and PNG plots from results files."""
    from ...eval.report import write_report, write_summary

    for path in results:
        if not path.is_file():
            _fail(f"{path}: no such file")
    try:
        target = write_report(results, out)
        if json_out is not None:
            typer.echo(str(write_summary(results, json_out, machine=machine, command=command)))
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    typer.echo(str(target))
