"""`longread serve` (longread/serve/): the official openai client round-trips with it, streams, and gets clear
errors; requests queue; the prefix header reaches the engine; `--api-base` takes longread's own client there (and
to vLLM's `hosted_vllm/` provider, whose automatic prefix caching needs the segment first)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from longread.cli import app
from longread.serve.app import create_app
from longread.serve.fake import FakeProvider, SlowMock, free_port
from longread.backends.served import CACHE_PREFIX_HEADER
from longread.testing import MockModel

REPO = Path(__file__).resolve().parents[1]
LONGREAD = str(Path(sys.executable).with_name("longread"))  # the console script of this environment
STORY = REPO / "examples" / "lighthouse_keeper.md"
USER = [{"role": "user", "content": "Who kept the lamp at Carrow Point?"}]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGREAD_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.delenv("LONGREAD_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LONGREAD_API_BASE", raising=False)


@pytest.fixture(scope="module")
def provider():
    with FakeProvider(context_window=2048) as server:
        yield server


def client(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# -- the protocol ---------------------------------------------------------------------------------------------------
def test_openai_client_round_trip_with_usage(provider):
    reply = client(provider.base_url).chat.completions.create(model="fake", messages=USER, max_tokens=10)
    expected = MockModel(completion_tokens=24).complete(USER, 10)
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == "length"  # 24 tokens asked of a 10-token cap
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (expected.prompt_tokens, 10)
    assert [m.id for m in client(provider.base_url).models.list().data] == ["fake"]


def test_streaming_sends_the_same_text_in_pieces_then_usage(provider):
    whole = client(provider.base_url).chat.completions.create(model="fake", messages=USER, max_tokens=12)
    chunks = list(client(provider.base_url).chat.completions.create(
        model="fake", messages=USER, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"model": "fake", "messages": []}, 400, "messages"),
    ({"model": "fake"}, 400, "messages: Field required"),
    ({"model": "fake", "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "fake", "messages": USER, "n": 2}, 400, "one choice per request"),
    ({"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "only text content"),
    ({"model": "gpt-4o", "messages": USER}, 404, "this server serves 'fake'"),
    ({"model": "fake", "messages": USER, "max_tokens": 2040}, 400, "over the window of 2,048 tokens"),
    ({"model": "fake", "messages": [{"role": "user", "content": "word " * 2100}]}, 400, "leaves no room"),
])
def test_bad_requests_get_a_clear_openai_error(provider, body, status, says):
    response = httpx.post(f"{provider.base_url}/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert says in error["message"] and error["type"]
    if "window" in says or "room" in says:
        assert error["code"] == "context_length_exceeded"


def test_a_body_that_is_not_json_is_a_400(provider):
    response = httpx.post(f"{provider.base_url}/chat/completions", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_the_openai_client_maps_the_window_error_to_bad_request(provider):
    with pytest.raises(openai.BadRequestError, match="context_length_exceeded|over the window"):
        client(provider.base_url).chat.completions.create(model="fake", messages=USER, max_tokens=5000)


def test_api_key_is_required_when_set_and_health_needs_none():
    with FakeProvider(api_key="s3cret-key") as server:
        with pytest.raises(openai.AuthenticationError):
            client(server.base_url, "wrong").chat.completions.create(model="fake", messages=USER, max_tokens=4)
        with pytest.raises(openai.AuthenticationError):
            client(server.base_url, "wrong").models.list()
        ok = client(server.base_url, "s3cret-key").chat.completions.create(model="fake", messages=USER, max_tokens=4)
        assert ok.choices[0].message.content
        health = httpx.get(server.base_url.removesuffix("/v1") + "/health").json()
        assert health["status"] == "ok" and health["completed"] == 1 and "s3cret" not in json.dumps(health)


def test_concurrent_requests_queue_for_the_engine():
    """Eight requests at once on a server of one engine slot: they all finish, one engine call at a time."""
    with FakeProvider(latency=0.05, capacity=1) as server:
        async def burst():
            async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
                return await asyncio.gather(*(c.chat.completions.create(
                    model="fake", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=4)
                    for i in range(8)))

        replies = asyncio.run(burst())
        assert len({r.choices[0].message.content for r in replies}) == 8
        assert server.peak_in_flight > 1  # they did arrive together ...
        assert server.engine.stats.peak_in_flight == 1 and server.engine.stats.completed == 8  # ... and queued


def test_the_cache_prefix_header_reaches_the_engine():
    model = MockModel()
    engine_app = create_app(model, name="m")
    from fastapi.testclient import TestClient

    messages = [{"role": "system", "content": "You read."}, {"role": "user", "content": "SEGMENT TEXT then Q?"}]
    with TestClient(engine_app) as test_client:
        response = test_client.post("/v1/chat/completions", headers={CACHE_PREFIX_HEADER: "12"},
                                    json={"model": "m", "messages": messages, "max_tokens": 4})
        assert response.status_code == 200
        bad = test_client.post("/v1/chat/completions", headers={CACHE_PREFIX_HEADER: "twelve"},
                               json={"model": "m", "messages": messages, "max_tokens": 4})
        assert bad.status_code == 400 and CACHE_PREFIX_HEADER in bad.json()["error"]["message"]
    assert [c.cache_prefix for c in model.calls] == [12]


# -- client conventions: structured output, a model by id, the completion cache --------------------------------------
KEEPER_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "years": {"type": "integer"}},
                 "required": ["name", "years"], "additionalProperties": False}


def formatter_replies(*texts: str):
    """The engine's replies to JSON requests (`longread serve` tags them `formatter`), in turn."""
    queue = list(texts)
    return {"formatter": lambda call: queue.pop(0) if len(queue) > 1 else queue[0]}


@pytest.fixture
def json_provider():
    with FakeProvider(context_window=4096) as server:
        yield server


def test_openai_parse_gets_a_checked_object_after_one_retry(json_provider):
    from pydantic import BaseModel

    class Keeper(BaseModel):
        name: str
        years: int

    json_provider.model.replies = formatter_replies("It was Ada, for forty years.", '```json\n{"name": "Ada", '
                                                    '"years": 40}\n```')
    before = len(json_provider.model.calls)
    reply = client(json_provider.base_url).chat.completions.parse(model="fake", messages=USER, max_tokens=64,
                                                                  response_format=Keeper)
    assert reply.choices[0].message.parsed == Keeper(name="Ada", years=40)
    assert reply.choices[0].message.content == '{"name":"Ada","years":40}'  # the value alone, no fence
    calls = json_provider.model.calls[before:]
    assert len(calls) == 2 and '"years"' in calls[0].messages[0]["content"]  # the schema in the system message
    assert "does not match the schema" in calls[1].messages[-1]["content"]
    assert reply.usage.prompt_tokens == sum(c.prompt_tokens for c in calls)  # both calls are counted


def test_json_object_mode_and_a_streamed_json_reply(json_provider):
    json_provider.model.replies = formatter_replies('{"answer": "Ada"}')
    plain = client(json_provider.base_url).chat.completions.create(
        model="fake", messages=USER, max_tokens=32, response_format={"type": "json_object"})
    assert json.loads(plain.choices[0].message.content) == {"answer": "Ada"}
    chunks = list(client(json_provider.base_url).chat.completions.create(
        model="fake", messages=USER, max_tokens=32, stream=True, stream_options={"include_usage": True},
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"answer": "Ada"} and chunks[-1].usage.completion_tokens > 0


def test_a_reply_that_misses_twice_is_a_422_that_says_why(json_provider):
    json_provider.model.replies = formatter_replies('{"name": "Ada"}')
    with pytest.raises(openai.UnprocessableEntityError, match="'years' is a required property"):
        client(json_provider.base_url).chat.completions.create(
            model="fake", messages=USER, max_tokens=32,
            response_format={"type": "json_schema", "json_schema": {"name": "k", "schema": KEEPER_SCHEMA}})


@pytest.mark.parametrize(("response_format", "says"), [
    ({"type": "json_schema"}, "json_schema needs json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "k", "schema": {"type": "nonsense"}}}, "not a valid JSON schema"),
    ({"type": "xml"}, "response_format"),
])
def test_a_bad_response_format_is_a_400(json_provider, response_format, says):
    response = httpx.post(f"{json_provider.base_url}/chat/completions",
                          json={"model": "fake", "messages": USER, "response_format": response_format})
    assert response.status_code == 400 and says in response.json()["error"]["message"]


def test_langchain_with_structured_output_works_against_serve(json_provider):
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Keeper(BaseModel):
        name: str
        years: int

    json_provider.model.replies = formatter_replies('{"name": "Ada", "years": 40}')
    llm = ChatOpenAI(model="fake", base_url=json_provider.base_url, api_key="unused", max_retries=0)
    assert llm.with_structured_output(Keeper).invoke("Who kept the lamp?") == Keeper(name="Ada", years=40)
    titled = {**KEEPER_SCHEMA, "title": "Keeper"}  # LangChain names a dict schema by its title
    assert llm.with_structured_output(titled).invoke("Who?") == {"name": "Ada", "years": 40}
    assert llm.with_structured_output(Keeper, method="json_mode").invoke("Who? Answer in JSON.") == Keeper(
        name="Ada", years=40)
    assert json_provider.answered[-1].body["response_format"] == {"type": "json_object"}


def test_a_model_is_found_by_its_id_or_alias_and_an_unknown_one_is_a_404(provider):
    models = client(provider.base_url).models
    assert models.retrieve("fake").id == "fake" and models.retrieve("fake").max_model_len == 2048
    assert models.retrieve("hosted_vllm/fake").id == "hosted_vllm/fake"
    with pytest.raises(openai.NotFoundError, match="this server serves 'fake'"):
        models.retrieve("gpt-4o")


def test_serve_with_the_completion_cache_answers_a_repeated_request_without_the_engine(tmp_path):
    from fastapi.testclient import TestClient

    from longread.backends.cache import CachedModel

    engine_model = MockModel()
    body = {"model": "m", "messages": USER, "max_tokens": 8}
    with TestClient(create_app(CachedModel(engine_model, tmp_path / "c.sqlite"), name="m")) as test_client:
        first = test_client.post("/v1/chat/completions", json=body).json()
        again = test_client.post("/v1/chat/completions", json=body).json()
        other = test_client.post("/v1/chat/completions", json={**body, "temperature": 0.7}).json()
    assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert len(engine_model.calls) == 2 and other["choices"]


# -- longread's client: --api-base ----------------------------------------------------------------------------------
def test_ask_reaches_a_server_through_api_base_with_the_prefix_header(provider):
    before = len(provider.answered)
    result = invoke("ask", STORY, "Who is Ada?", "--model", "openai/fake", "--api-base", provider.base_url,
                    "--window", "1024", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    calls = provider.answered[before:]
    assert len(calls) == len(data["calls"]) == data["segments"] + 1
    workers = [c for c in calls if "x-longread-cache-prefix" in c.body["headers"]]
    assert len(workers) == data["segments"]  # every worker call marks its [system][segment] prefix; the manager not
    for call in workers:
        prefix = int(call.body["headers"]["x-longread-cache-prefix"])
        assert "Who is Ada?" not in call.body["messages"][-1]["content"][:prefix]


@pytest.mark.parametrize("model", ["local", "mock"])
def test_api_base_is_refused_for_a_model_that_runs_here(provider, model):
    result = invoke("ask", STORY, "Who is Ada?", "--model", model, "--api-base", provider.base_url)
    assert result.exit_code == 1 and "runs in this process" in result.output


def test_api_base_in_the_python_api(provider):
    import longread

    result = longread.ask(STORY, "Who is Ada?", model="openai/fake", api_base=provider.base_url, window=1024)
    assert result.answer and provider.answered[-1].body["model"] == "fake"


def test_hosted_vllm_gets_each_segment_first_so_prefix_caching_can_reuse_it(provider):
    """vLLM's automatic prefix caching reuses the longest shared token prefix: a second question about the same
    document must send each worker `[system][segment]` unchanged, ahead of anything that depends on the question."""
    runs = []
    for question in ("Who is Ada?", "What saved the steamer?"):
        before = len(provider.answered)
        result = invoke("ask", STORY, question, "--model", "hosted_vllm/fake", "--api-base", provider.base_url,
                        "--window", "1024", "--json")
        assert result.exit_code == 0, result.output
        runs.append([c.body for c in provider.answered[before:] if "x-longread-cache-prefix" in c.body["headers"]])
    first, second = runs
    assert len(first) == len(second) > 1 and all(b["model"] == "fake" for b in first + second)
    for a, b in zip(first, second):
        assert a["messages"][0] == b["messages"][0]  # the system prompt
        prefix = int(a["headers"]["x-longread-cache-prefix"])
        assert a["messages"][-1]["content"][:prefix] == b["messages"][-1]["content"][:prefix]
        assert len(os.path.commonprefix([a["messages"][-1]["content"], b["messages"][-1]["content"]])) >= prefix


# -- the command ----------------------------------------------------------------------------------------------------
def test_serve_refuses_an_api_model():
    result = invoke("serve", "--model", "openai/gpt-4o-mini")
    assert result.exit_code == 1 and "runs local models" in result.output


@pytest.mark.slow
def test_longread_ask_against_longread_serve_running_the_embedded_model(tmp_path):
    """Two processes: `longread serve` with the embedded model, and `longread ask` through --api-base. A second
    question reuses the segments' KV on the server (the prefix cache is the server's, shared by its clients)."""
    port = free_port()
    env = {**os.environ, "LONGREAD_WORKSPACE": str(tmp_path / "ws"), "OMP_NUM_THREADS": "1",
           "LONGREAD_STRATEGY": "chain"}
    env.pop("OPENAI_API_KEY", None)
    server = subprocess.Popen([LONGREAD, "serve", "--model", "local", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.5)
        text = tmp_path / "note.md"
        text.write_text(STORY.read_text(encoding="utf-8")[:1200], encoding="utf-8")
        cached = []
        for question in ("Who is Ada?", "Where is the lighthouse?"):
            done = subprocess.run(
                [LONGREAD, "ask", str(text), question, "--model", "openai/local",
                 "--api-base", f"{base}/v1", "--window", "1024", "--json"],
                env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            data = json.loads(done.stdout)
            assert data["answer"].strip() and data["model"] == "openai/local"
            cached.append(sum(c["cached_prompt_tokens"] for c in data["calls"]))
        assert cached[0] == 0 and cached[1] > 0
        assert httpx.get(f"{base}/health").json()["cached_prompt_tokens"] == cached[1]
    finally:
        server.terminate()
        server.wait(timeout=30)
