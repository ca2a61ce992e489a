"""The options the commands share, typed once. Help texts that list choices come from the registries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def _checked_kv(policy: str | None) -> str | None:
    """A typo in --kv is a usage error before anything loads, not a failure of every file."""
    if policy is not None:
        from ..backends.kv import validate_policy

        try:
            validate_policy(policy)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    return policy


def _finite_seconds(seconds: float | None) -> float | None:
    """`inf` and `nan` parse as floats and pass a minimum (nan compares false): a timeout must be a real wait."""
    import math

    if seconds is not None and not math.isfinite(seconds):
        raise typer.BadParameter(f"{seconds} is not a finite number of seconds")
    return seconds


def kv_help() -> str:
    from ..backends.kv import valid_forms

    return f"KV cache policy of the local backend: {valid_forms()}. Ignored by API models."


def strategy_help() -> str:
    from ..workflows.registry import DEFAULT_STRATEGY, available_strategies  # names only: no strategy is imported

    names = list(available_strategies())
    return (f"How a document is read: {', '.join(names)} (default: {DEFAULT_STRATEGY}, or LONGREAD_STRATEGY, or the "
            "config file's strategy)." if names else f"How a document is read (default: {DEFAULT_STRATEGY}).")


ModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", metavar="MODEL", envvar="LONGREAD_MODEL", show_default=False,
        help="`local` (embedded SmolLM2, the default), `hf:PATH`, an alias (`longread alias`), or a litellm model "
        "(`openai/gpt-4o-mini`). `longread models` lists them.",
    ),
]
WindowOption = Annotated[
    Optional[int],
    typer.Option("--window", "-w", metavar="TOKENS", min=1, show_default=False,
                 help="Tokens per call, prompt + output (default: min(model context, 8192); 4096 for local)."),
]
KvOption = Annotated[
    Optional[str],
    typer.Option("--kv", metavar="POLICY", callback=_checked_kv, show_default=False, help=kv_help()),
]
StrategyOption = Annotated[
    Optional[str],
    typer.Option("--strategy", metavar="NAME", envvar="LONGREAD_STRATEGY", show_default=False, help=strategy_help()),
]
JsonOption = Annotated[
    bool, typer.Option("--json", metavar="", help="One JSON object per document per line on stdout, nothing else "
                       "(a failed document: an object with `error`).")
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", metavar="", help="Read on a stand-in that counts with the model's tokenizer: "
                 "segments, calls, tokens and the most it can cost (API models) or take (local models, measured "
                 "here); no call to the model."),
]
ForceOption = Annotated[
    bool, typer.Option("--force", metavar="", help="Redo finished documents and start interrupted runs over "
                       "instead of resuming.")
]
WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option("--workspace", metavar="DIR", envvar="LONGREAD_WORKSPACE", file_okay=False, show_default=False,
                 help="Where checkpoints and the runs log live (default: ~/.cache/longread/workspace on Linux)."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No progress display and no notes; "
                                           "errors still show.")]
TimeoutOption = Annotated[
    Optional[float],
    typer.Option("--timeout", metavar="SECONDS", envvar="LONGREAD_TIMEOUT", min=0.01, show_default=False,
                 callback=_finite_seconds,
                 help="Seconds an API model has to answer one call before it is tried again (default 120; with "
                 "streaming, the longest wait for the next words). Local models ignore it."),
]
ApiBaseOption = Annotated[
    Optional[str],
    typer.Option("--api-base", metavar="URL", envvar="LONGREAD_API_BASE", show_default=False,
                 help="The server of an API model: `longread serve` or vLLM (`--model openai/NAME --api-base "
                 "http://127.0.0.1:8000/v1`, `hosted_vllm/NAME`), a proxy, another endpoint of the provider."),
]
GpuMemoryOption = Annotated[
    Optional[float],
    typer.Option("--gpu-memory", metavar="FRACTION", envvar="LONGREAD_GPU_MEMORY", min=0.01, max=1.0,
                 show_default=False,
                 help="Share of the GPU's memory the local engine may use for weights, KV caches and activations "
                 "(default 0.9). Calls that cannot fit even alone are refused before they run; concurrent calls "
                 "wait for room. Ignored on the CPU and by API models."),
]
JobsOption = Annotated[
    Optional[int],
    typer.Option("--jobs", "-j", metavar="N", min=1, show_default=False,
                 help="Documents of a folder read at once (default: 4 for API models, 1 for local ones). They "
                 "share one cap on calls in flight and one pause after a rate limit."),
]
RayOption = Annotated[
    Optional[str],
    typer.Option("--ray", metavar="[ADDRESS]", envvar="LONGREAD_RAY_ADDRESS", show_default=False,
                 help="Read the documents as tasks on a Ray cluster (`pip install 'longread[ray]'`): its address "
                 "(ray://HOST:10001, HOST:6379), or `auto` (the default of a bare --ray) to join or start a local "
                 "instance. Results are written here, as a local run writes them."),
]
# Options whose value may be left out (`--ray` alone means `--ray auto`): cli/__init__.py fills the value in
# before typer parses the command line, whose parser has no optional values.
OPTIONAL_VALUES = {"--ray": "auto"}
TraceOption = Annotated[bool, typer.Option("--trace", metavar="", help="After each result, show on stderr what "
                                           "every agent wrote, and every claim kept, dropped (and why) or set "
                                           "aside.")]
NoStreamOption = Annotated[bool, typer.Option("--no-stream", metavar="", help="Print the answer when it is "
                                              "finished instead of as it is written.")]


def _checked_schema(spec: str | None):  # noqa: ANN202
    """--schema is read and checked before anything loads: a bad schema is a usage error naming the file."""
    if spec is None:
        return None
    from ..structured import SchemaError, load_schema

    try:
        return load_schema(spec)
    except SchemaError as exc:
        raise typer.BadParameter(str(exc)) from None


SchemaOption = Annotated[
    Optional[str],
    typer.Option("--schema", metavar="JSON|FILE", callback=_checked_schema, show_default=False,
                 help="Answer as JSON matching this JSON schema (the schema itself, or a file holding it): one more "
                 "call writes the answer as JSON, checked against the schema and retried once. Prints the JSON "
                 "object (with --json: under `data`)."),
]
CacheOption = Annotated[
    bool,
    typer.Option("--cache", metavar="", envvar="LONGREAD_CACHE",
                 help="Answer calls already made with the same model, prompt and sampling settings from the "
                 "completion cache (WORKSPACE/completions.sqlite), so a re-run makes no model calls. "
                 "`longread runs` shows the hits."),
]
TraceOtelOption = Annotated[
    bool,
    typer.Option("--trace-otel", metavar="", envvar="LONGREAD_TRACE_OTEL",
                 help="Send OpenTelemetry spans (GenAI conventions: each run, agent step and model call, with "
                 "tokens, cost, time to first token, cache hits) over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT "
                 "(default http://localhost:4318). Needs `pip install 'longread[otel]'`."),
]
