"""The litellm backend, without network: litellm's mock_response, patched litellm calls and a local HTTP server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longread.backends.litellm.model import LiteLLMModel
from longread.errors import ModelError, WindowExceeded

litellm = pytest.importorskip("litellm")

MODEL = "openai/gpt-4o-mini"  # priced in litellm's bundled table
UNPRICED = "openai/longread-test-unknown-model"
SECRET = "sk-test-SECRET123"
MESSAGES = [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Say hello."}]
REAL_COMPLETION = litellm.completion
REAL_ACOMPLETION = litellm.acompletion


def _error(kind: type[Exception], message: str = "upstream trouble") -> Exception:
    """An instance of a litellm exception class, built the way litellm's own mapping builds it."""
    if kind is litellm.PermissionDeniedError:
        response = httpx.Response(403, request=httpx.Request("POST", "https://api.example"))
        return kind(message=message, llm_provider="openai", model=MODEL, response=response)
    return kind(message=message, llm_provider="openai", model=MODEL)


TRANSIENT = [
    litellm.RateLimitError,
    litellm.ServiceUnavailableError,
    litellm.Timeout,
    litellm.APIConnectionError,
    litellm.InternalServerError,
    litellm.BadGatewayError,
]
PERMANENT = [
    litellm.AuthenticationError,
    litellm.BadRequestError,
    litellm.NotFoundError,
    litellm.ContextWindowExceededError,
    litellm.PermissionDeniedError,
]


class Scripted:
    """Stands in for litellm.completion / acompletion: raises the scripted errors in turn, then answers for real
    through litellm's mock_response. Records the keyword arguments of every attempt."""

    def __init__(self, errors: list[Exception], repeat_last: bool = False, text: str = "hello"):
        self.errors = list(errors)
        self.repeat_last = repeat_last
        self.text = text
        self.calls: list[dict] = []

    def _next_error(self) -> Exception | None:
        if self.repeat_last and self.errors:
            return self.errors[0] if len(self.errors) == 1 else self.errors.pop(0)
        return self.errors.pop(0) if self.errors else None

    def sync(self, **kwargs):
        self.calls.append(kwargs)
        error = self._next_error()
        if error is not None:
            raise error
        return REAL_COMPLETION(**{**kwargs, "mock_response": self.text})

    async def async_(self, **kwargs):
        self.calls.append(kwargs)
        error = self._next_error()
        if error is not None:
            raise error
        return await REAL_ACOMPLETION(**{**kwargs, "mock_response": self.text})


def _call(model: LiteLLMModel, mode: str, max_new_tokens: int = 8, **kwargs):
    if mode == "sync":
        return model.complete(MESSAGES, max_new_tokens, **kwargs)
    return asyncio.run(model.acomplete(MESSAGES, max_new_tokens, **kwargs))


def _patch(monkeypatch, fake: Scripted) -> None:
    monkeypatch.setattr(litellm, "completion", fake.sync)
    monkeypatch.setattr(litellm, "acompletion", fake.async_)


class BreakingStream:
    """Stands in for a streaming litellm call: each attempt streams litellm's mock reply, and the attempts listed in
    `break_after` (attempt number -> pieces delivered first) fail with a dropped connection after that many."""

    def __init__(self, break_after: dict[int, int], text: str = "hello there reader"):
        self.break_after = break_after
        self.text = text
        self.calls = 0

    def sync(self, **kwargs):
        self.calls += 1
        cut = self.break_after.get(self.calls)
        stream = REAL_COMPLETION(**{**kwargs, "mock_response": self.text})
        return stream if cut is None else self._cut(list(stream), cut)

    async def async_(self, **kwargs):
        self.calls += 1
        cut = self.break_after.get(self.calls)
        stream = await REAL_ACOMPLETION(**{**kwargs, "mock_response": self.text})
        if cut is None:
            return stream
        chunks = [chunk async for chunk in stream]

        async def cut_stream():
            for chunk in self._cut(chunks, cut):
                yield chunk

        return cut_stream()

    @staticmethod
    def _cut(chunks, cut):
        delivered = 0
        for chunk in chunks:
            if delivered == cut:
                raise _error(litellm.APIConnectionError, "the connection dropped")
            delivered += bool(chunk.choices and chunk.choices[0].delta.content)
            yield chunk
        raise _error(litellm.APIConnectionError, "the connection dropped")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_is_retried_until_its_first_words_and_never_after(monkeypatch, mode):
    """A stream that fails before any text reached the reader is retried; one that fails after is not (a retry
    would repeat words the reader has seen), and the error says so."""
    fake = BreakingStream({1: 0})
    _patch(monkeypatch, fake)
    pieces: list[str] = []
    result = _call(LiteLLMModel(MODEL, retry_wait=0), mode, 16, on_text=pieces.append)
    assert fake.calls == 2 and result.text == "hello there reader" == "".join(pieces)

    fake = BreakingStream({1: 1})
    _patch(monkeypatch, fake)
    pieces = []
    with pytest.raises(ModelError) as raised:
        _call(LiteLLMModel(MODEL, retry_wait=0), mode, 16, on_text=pieces.append)
    assert fake.calls == 1 and len(pieces) == 1
    assert "the stream broke after its first words" in str(raised.value)
    assert raised.value.error_type == "APIConnectionError" and raised.value.attempts == 1


# ---- construction and model facts -------------------------------------------------------------------------------


def test_get_model_routes_litellm_names_to_this_backend():
    from longread.backends import get_model

    model = get_model(MODEL, context_window=4096, kv="quant:4")  # kv is a local-backend option, dropped here
    assert isinstance(model, LiteLLMModel)
    assert model.name == MODEL
    assert model.context_window == 4096


def test_window_and_prices_come_from_litellms_local_table():
    info = litellm.get_model_info(MODEL)
    model = LiteLLMModel(MODEL)
    assert model.context_window == info["max_input_tokens"]
    assert model.price_per_token() == (info["input_cost_per_token"], info["output_cost_per_token"])
    assert min(model.price_per_token()) > 0
    assert LiteLLMModel(MODEL, context_window=1234).context_window == 1234


def test_unknown_model_gets_the_default_window_and_no_price():
    model = LiteLLMModel(UNPRICED)
    assert model.context_window == 8192
    assert model.price_per_token() == (0.0, 0.0)


def test_no_network_for_price_table_or_model_facts():
    """A fresh process resolves window and prices with every DNS lookup refused (no price-table fetch)."""
    script = f"""
import socket
looked_up = []
def refuse(*args, **kwargs):
    looked_up.append(args[0] if args else None)
    raise OSError("network disabled in this test")
socket.getaddrinfo = refuse
from longread.backends.litellm.model import LiteLLMModel
import os
model = LiteLLMModel({MODEL!r})
ollama = LiteLLMModel("ollama/llama3.1")  # litellm would ask the Ollama server; we must not
hf = LiteLLMModel("huggingface/meta-llama/Llama-3.1-8B-Instruct")  # litellm would fetch config.json from the hub
print(os.environ["LITELLM_LOCAL_MODEL_COST_MAP"], model.context_window, model.price_per_token()[0] > 0,
      ollama.context_window, hf.price_per_token(), looked_up)
"""
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "True 128000 True 8192 (0.0, 0.0) []"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=200)), max_size=6))
def test_prompt_count_adds_openai_framing_per_message(pairs):
    model = LiteLLMModel(MODEL, context_window=8192)
    messages = [{"role": role, "content": text} for role, text in pairs]
    total = model.count_prompt_tokens(messages)
    # Additive over messages, each costing at least its own tokens plus the 4-token frame, plus 3 for the reply.
    assert total == 3 + sum(model.count_prompt_tokens([m]) - 3 for m in messages)
    for m in messages:
        assert model.count_prompt_tokens([m]) == model.tokenizer.count(m["content"]) + 4 + 3


# ---- calls --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_mock_response_gives_text_usage_and_cost(mode):
    model = LiteLLMModel(MODEL, mock_response="hello")
    reference = REAL_COMPLETION(model=MODEL, messages=MESSAGES, mock_response="hello")
    result = _call(model, mode)
    assert result.text == "hello"
    assert result.prompt_tokens == reference.usage.prompt_tokens
    assert result.completion_tokens == reference.usage.completion_tokens
    price_in, price_out = model.price_per_token()
    assert result.cost_usd > 0
    assert result.cost_usd == pytest.approx(result.prompt_tokens * price_in + result.completion_tokens * price_out)
    assert result.finish_reason == "stop"
    assert result.seconds >= 0


def test_unpriced_model_costs_nothing():
    result = LiteLLMModel(UNPRICED, mock_response="hello").complete(MESSAGES, 8)
    assert result.text == "hello"
    assert result.cost_usd == 0.0


def test_missing_usage_falls_back_to_our_counts_and_price_math(monkeypatch):
    answer = "three small words"
    bare = SimpleNamespace(
        choices=[SimpleNamespace(message=SimpleNamespace(content=answer), finish_reason="length")], usage=None
    )
    monkeypatch.setattr(litellm, "completion", lambda **kwargs: bare)
    model = LiteLLMModel(MODEL)
    result = model.complete(MESSAGES, 8)
    assert result.prompt_tokens == model.count_prompt_tokens(MESSAGES)
    assert result.completion_tokens == model.tokenizer.count(answer)
    assert result.finish_reason == "length"
    price_in, price_out = model.price_per_token()
    assert result.cost_usd == pytest.approx(result.prompt_tokens * price_in + result.completion_tokens * price_out)


def test_request_carries_limits_and_turns_litellm_retries_off(monkeypatch):
    fake = Scripted([])
    _patch(monkeypatch, fake)
    model = LiteLLMModel(MODEL, timeout=7.5, api_base="http://127.0.0.1:1/v1", api_version="2024-01-01")
    model.complete(MESSAGES, 12, temperature=0.3)
    sent = fake.calls[0]
    assert (sent["model"], sent["max_tokens"], sent["temperature"], sent["timeout"]) == (MODEL, 12, 0.3, 7.5)
    assert sent["num_retries"] == 0 and sent["max_retries"] == 0
    assert sent["api_base"] == "http://127.0.0.1:1/v1" and sent["api_version"] == "2024-01-01"
    assert sent["messages"] == MESSAGES


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_window_is_checked_before_litellm_is_called(monkeypatch, mode):
    fake = Scripted([AssertionError("litellm must not be called")])
    _patch(monkeypatch, fake)
    model = LiteLLMModel(MODEL, context_window=30)
    prompt = model.count_prompt_tokens(MESSAGES)
    with pytest.raises(WindowExceeded):
        _call(model, mode, max_new_tokens=30 - prompt + 1)
    with pytest.raises(WindowExceeded):  # a caller's window smaller than the model's
        LiteLLMModel(MODEL).complete(MESSAGES, 10, window=prompt + 9)
    assert fake.calls == []


# ---- retries ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", TRANSIENT, ids=lambda k: k.__name__)
def test_transient_errors_are_retried(monkeypatch, mode, kind):
    fake = Scripted([_error(kind), _error(kind)])
    _patch(monkeypatch, fake)
    result = _call(LiteLLMModel(MODEL, retry_wait=0), mode)
    assert result.text == "hello"
    assert len(fake.calls) == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", PERMANENT, ids=lambda k: k.__name__)
def test_permanent_errors_fail_at_once(monkeypatch, mode, kind):
    fake = Scripted([_error(kind)])
    _patch(monkeypatch, fake)
    with pytest.raises(ModelError) as raised:
        _call(LiteLLMModel(MODEL, retry_wait=0), mode)
    assert len(fake.calls) == 1
    assert MODEL in str(raised.value) and kind.__name__ in str(raised.value)
    assert (raised.value.model, raised.value.error_type, raised.value.attempts) == (MODEL, kind.__name__, 1)


def test_model_error_fields_are_declared_and_survive_a_pickle():
    """ModelError's fields are part of its type (errors.py), not set on an instance after the fact: one raised by
    any part of longread has them, and a Ray task's error keeps them on the way back."""
    plain = ModelError("the embedder failed")
    assert (plain.model, plain.error_type, plain.attempts) == (None, "", 0)
    failed = ModelError("openai/x: RateLimitError", model="openai/x", error_type="RateLimitError", attempts=3)
    copy = pickle.loads(pickle.dumps(failed))
    assert (str(copy), copy.model, copy.error_type, copy.attempts) == (str(failed), "openai/x", "RateLimitError", 3)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gives_up_after_max_retries_attempts(monkeypatch, mode):
    fake = Scripted([_error(litellm.RateLimitError)], repeat_last=True)
    _patch(monkeypatch, fake)
    with pytest.raises(ModelError) as raised:
        _call(LiteLLMModel(MODEL, retry_wait=0, max_retries=4), mode)
    assert len(fake.calls) == 4
    assert "RateLimitError" in str(raised.value) and "4 attempts" in str(raised.value)


def test_backoff_waits_at_least_what_retry_after_asks(monkeypatch, caplog):
    response = httpx.Response(429, headers={"retry-after": "0.3"}, request=httpx.Request("POST", "https://api.example"))
    limited = litellm.RateLimitError(message="slow down", llm_provider="openai", model=MODEL, response=response)
    fake = Scripted([limited])
    _patch(monkeypatch, fake)
    caplog.set_level(logging.WARNING, logger="longread.backends.litellm.model")
    slept: list[float] = []  # the waits this thread asked of the clock (not the clock read back: no timed assert)
    real_sleep, caller = time.sleep, threading.get_ident()

    def recording(seconds):
        if threading.get_ident() == caller:
            slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording)
    LiteLLMModel(MODEL, retry_wait=0).complete(MESSAGES, 8)
    assert sum(slept) >= 0.3
    assert len(fake.calls) == 2
    assert any("retrying in 0.3 s" in r.getMessage() for r in caplog.records)


# ---- secrets ------------------------------------------------------------------------------------------------------


def test_api_key_never_shows(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("LONGREAD_TEST_SERVICE_TOKEN", "tok-OTHER-987654")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="LiteLLM")
    leaky = f"Incorrect API key provided: {SECRET}; token tok-OTHER-987654"
    fake = Scripted([_error(litellm.RateLimitError, leaky), _error(litellm.AuthenticationError, leaky)])
    _patch(monkeypatch, fake)
    model = LiteLLMModel(MODEL, api_key=SECRET, retry_wait=0, extra_headers={"Authorization": "Bearer hdr-SECRET-456"})
    with pytest.raises(ModelError) as raised:
        model.complete(MESSAGES, 8)
    assert fake.calls[0]["api_key"] == SECRET  # the key is used ...
    assert fake.calls[0]["extra_headers"] == {"Authorization": "Bearer hdr-SECRET-456"}
    message = str(raised.value)
    assert "AuthenticationError" in message and "***" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # tracebacks omit the original
    dumps = [message, repr(model), str(vars(model)), pickle.dumps(model).decode("latin-1"), caplog.text]
    for dump in dumps:  # ... and shown nowhere
        for secret in (SECRET, "SECRET123", "tok-OTHER-987654", "hdr-SECRET-456"):
            assert secret not in dump


def test_unpickled_model_works_without_the_key():
    model = LiteLLMModel(MODEL, api_key=SECRET, mock_response="hello", max_concurrency=3)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.name == MODEL and copy.context_window == model.context_window and copy.max_concurrency == 3
    assert copy.complete(MESSAGES, 8).text == "hello"
    assert asyncio.run(copy.acomplete(MESSAGES, 8)).text == "hello"


class _FakeProvider(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint answering with the scripted statuses in turn; it echoes the Authorization
    header into its error messages, as a careless provider might."""

    script: list[int] = []
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        status = type(self).script.pop(0) if len(type(self).script) > 1 else type(self).script[0]
        if status == 200:
            payload = {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "served"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
            }
        else:
            payload = {"error": {"message": f"rejected {self.headers.get('Authorization')}", "type": "error"}}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeProvider)
    _FakeProvider.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", _FakeProvider
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("script", "requests", "outcome"),
    [([503, 429, 200], 3, "served"), ([401], 1, "AuthenticationError"), ([500], 2, "InternalServerError")],
)
def test_through_real_litellm_against_a_local_server(provider, caplog, script, requests, outcome):
    """litellm's real HTTP path: its error mapping feeds our retry rule, no client retries on its own, and the key
    the server echoes back appears in no error and no log, litellm's debug logs included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="LiteLLM")
    base, handler = provider
    handler.script = list(script)
    model = LiteLLMModel(MODEL, api_key=SECRET, api_base=base, retry_wait=0, max_retries=2 if outcome != "served" else 3)
    if outcome == "served":
        result = model.complete(MESSAGES, 16)
        assert (result.text, result.prompt_tokens, result.completion_tokens, result.finish_reason) == (
            "served", 42, 7, "length",
        )
        assert result.cost_usd == pytest.approx(42 * model.price_per_token()[0] + 7 * model.price_per_token()[1])
    else:
        with pytest.raises(ModelError) as raised:
            model.complete(MESSAGES, 16)
        assert outcome in str(raised.value) and SECRET not in str(raised.value)
    assert len(handler.requests) == requests
    assert handler.requests[0]["auth"] == f"Bearer {SECRET}"
    assert handler.requests[0]["body"]["max_tokens"] == 16
    assert caplog.records and SECRET not in caplog.text


# ---- concurrency --------------------------------------------------------------------------------------------------


class InFlight:
    def __init__(self):
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def enter(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


def test_async_calls_are_capped(monkeypatch):
    flight = InFlight()

    async def slow(**kwargs):
        flight.enter()
        await asyncio.sleep(0.05)
        flight.leave()
        return await REAL_ACOMPLETION(**{**kwargs, "mock_response": "ok"})

    monkeypatch.setattr(litellm, "acompletion", slow)
    model = LiteLLMModel(MODEL, max_concurrency=2)

    async def six():
        return await asyncio.gather(*(model.acomplete(MESSAGES, 8) for _ in range(6)))

    for _ in range(2):  # a second asyncio.run gets a semaphore of its own loop
        assert [r.text for r in asyncio.run(six())] == ["ok"] * 6
    assert flight.peak == 2


def test_sync_calls_from_threads_are_capped(monkeypatch):
    flight = InFlight()

    def slow(**kwargs):
        flight.enter()
        time.sleep(0.05)
        flight.leave()
        return REAL_COMPLETION(**{**kwargs, "mock_response": "ok"})

    monkeypatch.setattr(litellm, "completion", slow)
    model = LiteLLMModel(MODEL, max_concurrency=2)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: model.complete(MESSAGES, 8), range(6)))
    assert [r.text for r in results] == ["ok"] * 6
    assert flight.peak == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_retries"):
        LiteLLMModel(MODEL, context_window=100, max_retries=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        LiteLLMModel(MODEL, context_window=100, max_concurrency=0)
