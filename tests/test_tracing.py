"""OpenTelemetry spans (longread/tracing.py) in the GenAI semantic conventions: a run, its agent steps and their
model calls, checked with the SDK's in-memory exporter; `--trace-otel` sends them over OTLP to a collector."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from typer.testing import CliRunner

import longread
from longread.backends.base import Completion
from longread.backends.cache import CachedModel
from longread.cli import app
from longread.testing import MockModel
from longread.tracing import TracedModel

REPO = Path(__file__).resolve().parents[1]
STORY = REPO / "examples" / "lighthouse_keeper.md"


@pytest.fixture(autouse=True)
def isolated(cli_isolated, monkeypatch):
    monkeypatch.delenv("LONGREAD_TRACE_OTEL", raising=False)
    monkeypatch.delenv("LONGREAD_CACHE", raising=False)


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def tree(spans):
    """(the root spans, children by parent span id)."""
    children: dict[int, list] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    roots = [s for s in spans if s.parent is None]
    return roots, children


def named(spans, prefix):
    return [s for s in spans if s.name.startswith(prefix)]


# -- the span tree ----------------------------------------------------------------------------------------------------
def test_a_chain_run_is_a_workflow_span_over_one_agent_span_per_call_each_over_its_chat_span(tracer, exporter):
    model = MockModel(price=(1e-6, 2e-6))
    result = longread.Reader(STORY, model=TracedModel(model, tracer), window=1024, strategy="chain").ask("Who?")
    spans = exporter.get_finished_spans()
    roots, children = tree(spans)
    assert [r.name for r in roots] == ["invoke_workflow chain"]
    run = roots[0]
    steps = sorted(children[run.context.span_id], key=lambda s: s.start_time)
    assert [s.attributes["gen_ai.agent.name"] for s in steps] == [c.agent for c in result.calls]
    assert [s.attributes.get("longread.segment") for s in steps] == [c.segment for c in result.calls]
    assert all(s.name == f"invoke_agent {s.attributes['gen_ai.agent.name']}" for s in steps)
    for step, record in zip(steps, result.calls):
        (chat,) = children[step.context.span_id]
        a = chat.attributes
        assert chat.name == "chat mock" and a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "mock" and a["gen_ai.provider.name"] == "mock"
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (record.prompt_tokens,
                                                                                     record.completion_tokens)
        assert a["gen_ai.request.max_tokens"] == record.max_new_tokens
        assert a["longread.cost_usd"] == pytest.approx(record.cost_usd) and a["longread.cache_hit"] is False
        assert list(a["gen_ai.response.finish_reasons"]) == [record.finish_reason]
    totals = run.attributes
    assert totals["gen_ai.operation.name"] == "invoke_workflow" and totals["gen_ai.workflow.name"] == "chain"
    assert totals["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert totals["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert totals["longread.calls"] == len(result.calls) and totals["longread.segments"] == result.segments
    assert len({s.context.trace_id for s in spans}) == 1


def test_calls_made_in_a_thread_pool_stay_under_their_run(tracer, exporter):
    """multipath reads its paths in a ThreadPoolExecutor, whose threads do not inherit the run's context."""
    result = longread.Reader(STORY, model=TracedModel(MockModel(), tracer), window=1024,
                             strategy="multipath").ask("Who?")
    spans = exporter.get_finished_spans()
    roots, _ = tree(spans)
    assert [r.name for r in roots] == ["invoke_workflow multipath"]
    chats = named(spans, "chat ")
    assert len(chats) == len(result.calls) and {s.context.trace_id for s in chats} == {roots[0].context.trace_id}
    paths = {s.attributes.get("longread.path") for s in named(spans, "invoke_agent worker")}
    assert len(paths) > 1


def test_two_runs_at_once_on_one_traced_model_keep_their_own_calls(tracer, exporter):
    """A --jobs run shares one traced model between documents; multipath's path threads of each document must
    still land under that document's run, even while the other document's paths are in flight."""
    meeting = threading.Barrier(6, timeout=20)  # the first worker call of each of the 2 x 3 paths, all at once
    met = threading.local()

    def worker(call):
        if not getattr(met, "done", False):
            met.done = True
            meeting.wait()
        return None  # the derived text

    shared = TracedModel(MockModel(replies={"worker": worker}), tracer)
    texts = [STORY.read_text(encoding="utf-8"), STORY.read_text(encoding="utf-8").replace("Ada", "Ruth")]
    results: dict[int, object] = {}

    def read(i):
        document = longread.Document(texts[i], source=f"doc{i}.md", title=f"doc{i}")
        results[i] = longread.Reader(document, model=shared, window=1024, strategy="multipath").ask("Who?")

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans = exporter.get_finished_spans()
    for run in named(spans, "invoke_workflow"):
        i = int(run.attributes["longread.document"][3])
        chats = [s for s in named(spans, "chat ") if s.context.trace_id == run.context.trace_id]
        assert len(chats) == len(results[i].calls)


def test_completion_cache_hits_show_on_the_chat_spans(tracer, exporter, tmp_path):
    model = TracedModel(CachedModel(MockModel(), tmp_path / "c.sqlite"), tracer)
    for _ in range(2):
        longread.ask(STORY, "Who?", model=model, window=1024, strategy="chain")
    runs = named(exporter.get_finished_spans(), "invoke_workflow")
    assert [r.attributes["longread.cache_hits"] for r in runs] == [0, runs[1].attributes["longread.calls"]]
    second = [s for s in named(exporter.get_finished_spans(), "chat ") if s.start_time > runs[0].end_time]
    assert second and all(s.attributes["longread.cache_hit"] and s.attributes["longread.cost_usd"] == 0
                          for s in second)


class StreamingMock(MockModel):
    streams = True

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None,
                  on_text=None) -> Completion:
        completion = super()._complete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)
        if on_text is not None:
            for word in completion.text.split(" "):
                on_text(word + " ")
        return completion


def test_a_streamed_call_records_its_time_to_first_chunk(tracer, exporter):
    pieces: list[str] = []
    TracedModel(StreamingMock(), tracer).complete([{"role": "user", "content": "Hi"}], 8, on_text=pieces.append)
    TracedModel(StreamingMock(), tracer).complete([{"role": "user", "content": "Hi"}], 8)
    streamed, plain = exporter.get_finished_spans()
    ttft = streamed.attributes["gen_ai.response.time_to_first_chunk"]
    assert pieces and 0 <= ttft <= (streamed.end_time - streamed.start_time) / 1e9
    assert streamed.attributes["gen_ai.request.stream"] is True and plain.attributes["gen_ai.request.stream"] is False
    assert "gen_ai.response.time_to_first_chunk" not in plain.attributes
    assert streamed.parent is None and streamed.kind.name == "CLIENT"  # an untagged call alone: no step span


def test_a_failed_call_marks_its_span_and_the_run(tracer, exporter):
    model = TracedModel(MockModel(fail_on_calls={2}), tracer)
    with pytest.raises(RuntimeError):
        longread.ask(STORY, "Who?", model=model, window=1024, strategy="chain")
    spans = exporter.get_finished_spans()
    failed = [s for s in named(spans, "chat ") if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == 1 and failed[0].attributes["error.type"] == "RuntimeError"
    assert named(spans, "invoke_workflow")[0].attributes["error.type"] == "RuntimeError"


def test_async_runs_and_structured_answers_are_traced(tracer, exporter):
    model = MockModel(replies={"formatter": '{"name": "Ada"}'})
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    result = asyncio.run(longread.aask(STORY, "Who?", model=TracedModel(model, tracer), window=1024,
                                       strategy="chain", schema=schema))
    spans = exporter.get_finished_spans()
    (formatter,) = named(spans, "invoke_agent formatter")
    (chat,) = [s for s in spans if s.parent is not None and s.parent.span_id == formatter.context.span_id]
    assert chat.attributes["gen_ai.output.type"] == "json" and result.data == {"name": "Ada"}
    assert len(named(spans, "chat ")) == len(result.calls)


def test_no_prompt_answer_or_key_is_put_on_a_span(tracer, exporter):
    model = MockModel(replies={"reader": "The keeper was Ada Merrow."})
    result = longread.ask(STORY, "Who kept the lamp at Carrow Point?", model=TracedModel(model, tracer), window=8192,
                          strategy="full")
    assert result.answer == "The keeper was Ada Merrow." and "Carrow Point" in STORY.read_text(encoding="utf-8")
    text = json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()], default=str)
    assert "Ada Merrow" not in text and "Carrow Point" not in text and "invoke_workflow" in text


# -- switching it on --------------------------------------------------------------------------------------------------
def test_the_environment_variable_or_trace_true_turns_tracing_on_in_python(monkeypatch):
    assert not isinstance(longread.Reader(STORY, model=MockModel()).model, TracedModel)
    assert isinstance(longread.Reader(STORY, model=MockModel(), trace=True).model, TracedModel)
    monkeypatch.setenv("LONGREAD_TRACE_OTEL", "1")
    assert isinstance(longread.Reader(STORY, model=MockModel()).model, TracedModel)
    assert not isinstance(longread.Reader(STORY, model=MockModel(), trace=False).model, TracedModel)
    monkeypatch.setenv("LONGREAD_TRACE_OTEL", "0")
    assert not isinstance(longread.Reader(STORY, model=MockModel()).model, TracedModel)


class Collector:
    """An OTLP/HTTP collector on 127.0.0.1 that keeps the spans it is sent (decoded with opentelemetry-proto)."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list = []
        self.resources: list = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    collector.resources.append({a.key: a.value.string_value
                                                for a in resource_spans.resource.attributes})
                    for scope in resource_spans.scope_spans:
                        collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def attributes(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.int_value if v.HasField("int_value") else v.string_value if v.HasField("string_value") else None
    return out


def test_cli_trace_otel_sends_the_span_tree_to_an_otlp_collector(monkeypatch):
    with Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        result = CliRunner().invoke(app, ["ask", str(STORY), "Who?", "--model", "mock", "--window", "1024", "--json",
                                          "--trace-otel"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = [s.name for s in collector.spans]
    assert names.count("invoke_workflow chain") == 1 and names.count("chat mock") == len(data["calls"])
    chats = [attributes(s) for s in collector.spans if s.name == "chat mock"]
    assert sum(a["gen_ai.usage.input_tokens"] for a in chats) == data["usage"]["prompt_tokens"]
    assert collector.resources[0]["service.name"] == "longread"


def test_cli_trace_otel_without_the_extra_is_one_line_before_any_call(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the SDK were not installed
    result = CliRunner().invoke(app, ["ask", str(STORY), "Who?", "--model", "mock", "--trace-otel"],
                                catch_exceptions=False)
    assert result.exit_code == 1 and "pip install 'longread[otel]'" in result.output
    assert "Traceback" not in result.output


# -- serve ------------------------------------------------------------------------------------------------------------
def test_serve_traces_each_request_as_a_chat_span(tracer, exporter):
    from fastapi.testclient import TestClient

    from longread.serve.app import create_app

    served = create_app(TracedModel(MockModel(replies={"formatter": '{"a": 1}'}), tracer), name="m")
    with TestClient(served) as client:
        plain = client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 5,
                                                          "messages": [{"role": "user", "content": "Hi"}]})
        shaped = client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 20,
                                                           "response_format": {"type": "json_object"},
                                                           "messages": [{"role": "user", "content": "Hi"}]})
    assert plain.status_code == shaped.status_code == 200
    chat, step, json_chat = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time)
    assert chat.name == "chat mock" and chat.parent is None
    assert chat.attributes["gen_ai.usage.output_tokens"] == plain.json()["usage"]["completion_tokens"]
    assert step.name == "invoke_agent formatter" and json_chat.parent.span_id == step.context.span_id
