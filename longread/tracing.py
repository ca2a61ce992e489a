"""OpenTelemetry spans for each run, strategy step and model call, in the GenAI semantic conventions.

    invoke_workflow chain              a run: Reader.ask / summarize (gen_ai.workflow.name = the strategy)
      invoke_agent worker              a strategy step: one agent's turn (gen_ai.agent.name = its role; the
        chat local                       segment and reading path as longread.* attributes)
      invoke_agent manager               a model call (gen_ai.operation.name = chat): model, max_tokens,
        chat local                       temperature, tokens in and out, KV-cache reuse, finish reasons, time to
                                         first chunk, cost, completion-cache hit

Off unless asked for: `Reader(trace=True)`, LONGREAD_TRACE_OTEL=1, or `--trace-otel` on the command line. From
Python the spans go to the application's tracer provider (whatever it set up, `opentelemetry-instrument`
included); the command line sets up one of its own (`configure`, with the `otel` extra: the SDK and the OTLP
exporter, configured by the standard OTEL_EXPORTER_OTLP_* variables). No prompt,
document text or answer is put on a span (the conventions make content opt-in), and no key.

The attribute names are the conventions' own strings, written out here: the semantic-conventions package keeps the
GenAI ones in a private (`_incubating`) module.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from .backends.base import ChatModel, Completion
from .backends.calls import Steps
from .backends.wrapper import ModelWrapper

if TYPE_CHECKING:
    from .results import Result

ENV = "LONGREAD_TRACE_OTEL"
TRACER = "longread"

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/)
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
MAX_TOKENS = "gen_ai.request.max_tokens"
TEMPERATURE = "gen_ai.request.temperature"
STREAM = "gen_ai.request.stream"
OUTPUT_TYPE = "gen_ai.output.type"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
AGENT_NAME = "gen_ai.agent.name"
WORKFLOW_NAME = "gen_ai.workflow.name"
ERROR_TYPE = "error.type"
# longread's own (the conventions have no cost, completion cache or reading position)
COST = "longread.cost_usd"
CACHE_HIT = "longread.cache_hit"
SEGMENT = "longread.segment"
PATH = "longread.path"
STEP = "longread.step"

# litellm's provider prefixes whose well-known name in the conventions differs
_PROVIDERS = {"gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "bedrock": "aws.bedrock",
              "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "watsonx": "ibm.watsonx.ai",
              "xai": "x_ai", "mistral": "mistral_ai"}


class TracingUnavailable(ImportError):
    pass


def wanted(trace: bool | None) -> bool:
    """`trace` when given, else whether LONGREAD_TRACE_OTEL is set to something other than 0/false/no/off."""
    if trace is not None:
        return trace
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def get_tracer(provider: Any = None) -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise TracingUnavailable("tracing needs OpenTelemetry: pip install 'longread[otel]'") from None
    from ._version import __version__

    return trace.get_tracer(TRACER, __version__, tracer_provider=provider)


def provider_name(model: ChatModel) -> str:
    name = model.name
    if model.is_local:
        return "longread"
    if "/" in name:
        prefix = name.split("/", 1)[0].lower()
        return _PROVIDERS.get(prefix, prefix)
    return name.split(":", 1)[0]  # mock, a plugin's prefix


def safe_source(source: str) -> str:
    """A document's source without what could be a credential: a URL's user, password, query and fragment."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https") and parts.netloc:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    return source


class TracedModel(ModelWrapper):
    """`inner` with a step span (for a call with a role tag) and a chat span around every call.

    `run_context` is the OpenTelemetry context of the run in progress (Reader sets it): a call made in a thread that
    did not inherit the run's context (a thread pool) still lands under its run."""

    def __init__(self, inner: ChatModel, tracer: Any = None):
        super().__init__(inner)
        self.tracer = tracer or get_tracer()
        self.run_context: Any = None

    def _parent(self) -> Any:
        from opentelemetry import trace

        if trace.get_current_span().get_span_context().is_valid:
            return None  # the current context: this call's own run
        return self.run_context

    @contextmanager
    def _spans(self, max_new_tokens: int, temperature: float, extra: dict[str, Any]) -> Iterator[Callable]:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tag = extra.get("tag")
        parent = self._parent()
        with _maybe_step(self.tracer, tag, parent):
            name = self.inner.name
            attributes = {OPERATION: "chat", PROVIDER: provider_name(self.inner), REQUEST_MODEL: name,
                          MAX_TOKENS: max_new_tokens, TEMPERATURE: float(temperature),
                          STREAM: extra.get("on_text") is not None,
                          OUTPUT_TYPE: "json" if extra.get("response_format") else "text"}
            context = None if tag is not None else parent  # under the step span just opened, else the run
            with self.tracer.start_as_current_span(f"chat {name}", context=context, kind=SpanKind.CLIENT,
                                                   attributes=attributes, record_exception=True,
                                                   set_status_on_exception=False) as span:
                started = time.perf_counter()
                first: list[float] = []
                on_text = extra.get("on_text")
                if on_text is not None:
                    def timed(piece: str) -> None:
                        if not first:
                            first.append(time.perf_counter() - started)
                        on_text(piece)

                    extra["on_text"] = timed

                def finished(completion: Completion) -> None:
                    span.set_attributes({
                        RESPONSE_MODEL: name, INPUT_TOKENS: completion.prompt_tokens,
                        OUTPUT_TOKENS: completion.completion_tokens,
                        CACHE_READ_TOKENS: completion.cached_prompt_tokens,
                        FINISH_REASONS: [completion.finish_reason], COST: completion.cost_usd,
                        CACHE_HIT: completion.cache_hit,
                    })
                    if first:
                        span.set_attribute(TIME_TO_FIRST_CHUNK, first[0])

                try:
                    yield finished
                except BaseException as exc:
                    span.set_attribute(ERROR_TYPE, getattr(exc, "error_type", None) or type(exc).__name__)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise

    def _calling(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra
                 ) -> Steps[Completion]:
        with self._spans(max_new_tokens, temperature, extra) as finished:
            completion = yield from super()._calling(messages, max_new_tokens, temperature, prompt_tokens,
                                                     cache_prefix, **extra)
            finished(completion)
            return completion


@contextmanager
def _maybe_step(tracer: Any, tag: Any, parent: Any) -> Iterator[None]:
    """The step span of a call made by an agent (a role tag), as the current span; nothing for an untagged call."""
    if tag is None:
        yield
        return
    attributes: dict[str, Any] = {OPERATION: "invoke_agent", AGENT_NAME: tag.agent}
    for key, value in ((SEGMENT, tag.segment), (PATH, tag.path), (STEP, tag.step)):
        if value is not None:
            attributes[key] = value
    with tracer.start_as_current_span(f"invoke_agent {tag.agent}", context=parent, attributes=attributes):
        yield


@contextmanager
def run_span(model: ChatModel, strategy: str, mode: str, source: str) -> Iterator[Callable[["Result"], None]]:
    """The span of one run, current while it lasts (and the run context of a TracedModel's calls); yields a
    function that records the run's totals from its Result. `strategy` is its spec (`multipath:paths=5`): the
    name alone names the span (span names stay few), the spec is an attribute."""
    from opentelemetry import context as otel_context

    traced = model if isinstance(model, TracedModel) else None
    tracer = traced.tracer if traced is not None else get_tracer()
    name = strategy.split(":", 1)[0]
    attributes = {OPERATION: "invoke_workflow", WORKFLOW_NAME: name, "longread.strategy": strategy,
                  REQUEST_MODEL: model.name, "longread.mode": mode, "longread.document": safe_source(source)}
    with tracer.start_as_current_span(f"invoke_workflow {name}", attributes=attributes) as span:
        previous = traced.run_context if traced is not None else None
        if traced is not None:
            traced.run_context = otel_context.get_current()

        def finished(result: "Result") -> None:
            usage = result.usage
            span.set_attributes({INPUT_TOKENS: usage.prompt_tokens, OUTPUT_TOKENS: usage.completion_tokens,
                                 CACHE_READ_TOKENS: usage.cached_prompt_tokens, COST: usage.cost_usd,
                                 "longread.calls": usage.calls, "longread.cache_hits": usage.cache_hits,
                                 "longread.segments": result.segments})

        try:
            yield finished
        except BaseException as exc:
            span.set_attribute(ERROR_TYPE, type(exc).__name__)
            raise
        finally:
            if traced is not None:
                traced.run_context = previous


# -- the command line's own provider ---------------------------------------------------------------------------------
class Export:
    """The tracer provider of one command; `shutdown()` sends the spans still waiting."""

    def __init__(self, provider: Any):
        self.provider = provider

    def tracer(self) -> Any:
        return get_tracer(self.provider)

    def shutdown(self) -> None:
        self.provider.shutdown()


def configure() -> Export:
    """A tracer provider of its own for one command (the process's global provider is left alone) that sends its
    spans over OTLP/HTTP, configured by the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
    OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318), OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME
    (default longread), OTEL_RESOURCE_ATTRIBUTES. TracingUnavailable without the `otel` extra."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingUnavailable("--trace-otel needs the OpenTelemetry SDK and OTLP exporter: "
                                 "pip install 'longread[otel]'") from None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; what is passed here would win over them.
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "longread"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Export(provider)
