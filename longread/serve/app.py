"""The FastAPI app of `longread serve`: OpenAI's chat completions over one ChatModel (the local engine).

    POST /v1/chat/completions   a reply, or server-sent events with `"stream": true` (usage in a last chunk with
                                `stream_options.include_usage`)
    GET  /v1/models             the model served, with its window (`max_model_len`, vLLM's field) and, for a model
                                counted with its own tokenizer, `"tokenizer": {"name": ...}`
    GET  /v1/models/{id}        the same object for its name (or an alias), else a 404
    GET  /v1/tokenizer          that tokenizer's files, so a client counts prompts as the server does
                                (backends/served.py; longread clients do it by themselves)
    GET  /health                {"status": "ok", ...} and the queue's counters; needs no key

- The window is checked before a request waits in the queue: prompt tokens (the engine's own tokenizer) plus
  `max_tokens` over the window is a 400 (`context_length_exceeded`) that says the numbers; without `max_tokens`
  a reply may use the rest of the window.
- Requests queue: at most `concurrency` engine calls run at once (for the local engine its `max_batch`: calls
  that run together decode in one batch, longread/backends/local/batching.py); the others wait in arrival order.
- The segment prefix cache: a request carrying `X-Longread-Cache-Prefix: N` (see protocol.py) marks the first N
  characters of its last message as reusable, as longread's own worker calls do in-process; the engine keeps
  that prefix's KV under its --kv policy, shared by every client of the server.
- With an API key, /v1/* needs `Authorization: Bearer KEY` (compared in constant time); the key is never logged.
- `response_format` json_object / json_schema (the `openai` client's `parse`, LangChain's `with_structured_output`):
  the schema goes in the system message, the reply is checked against it and retried once with what is wrong
  (longread/structured.py); the content is then the JSON value, written compactly. A reply that misses twice is a
  422 that says why. With `"stream": true` the checked JSON comes as one piece.
- Limits (limits.py): a body over `--max-request-bytes` or a prompt over `--max-prompt-tokens` is a 413; the
  prompt is counted off the event loop, so one long request never stalls the others; a request past
  `--request-timeout` is a 504, and one whose client disconnected is stopped (the local engine at its next token).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..backends.base import CallTag, ChatModel, Completion
from ..backends.served import CACHE_PREFIX_HEADER
from .limits import BodyLimit, ClientGone, ServerLimits, until_done_or_gone
from .protocol import ChatRequest, RequestError, chunk, completion_id, finish, reply, usage


@dataclass
class ServerStats:
    """Counters of one server (shown by /health; tests and the benchmark read them)."""

    requests: int = 0  # chat requests accepted (past validation and the window check)
    in_flight: int = 0  # engine calls running now
    queued: int = 0  # requests waiting for the engine
    peak_in_flight: int = 0
    completed: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    completion_tokens: int = 0
    cancelled: int = 0  # requests stopped because their client went away or their deadline passed


class Engine:
    """One ChatModel behind a queue: the window check, the cap on calls at once, the counters."""

    def __init__(self, model: ChatModel, *, name: str, aliases: Sequence[str] = (), window: int | None = None,
                 concurrency: int = 1, limits: ServerLimits | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.model = model
        self.name = name
        self.names = {name, *aliases}
        self.window = min(window or model.context_window, model.context_window)
        self.limits = limits or ServerLimits()
        self.tokenizer_files: dict[str, str] | None = None  # the model's tokenizer for clients (GET /v1/tokenizer)
        self.stats = ServerStats()
        self._slots = asyncio.Semaphore(concurrency)

    # -- checks before the queue -----------------------------------------------------------------------------------
    def prepare(self, body: ChatRequest, cache_prefix: str | None) -> tuple[list[dict[str, str]], int, int | None, int]:
        """(messages, max_new_tokens, cache prefix, prompt tokens), or a RequestError saying what is wrong."""
        body.check()
        if body.model not in self.names:
            raise RequestError(f"model {body.model!r} is not served here; this server serves {self.name!r}",
                               status=404, param="model", code="model_not_found")
        messages = body.chat_messages()
        prefix = self._prefix(cache_prefix, messages[-1]["content"])
        prompt = self.model.count_prompt_tokens(messages, prefix)
        most = self.limits.max_prompt_tokens
        if most is not None and prompt > most:
            raise RequestError(f"the prompt has {prompt:,} tokens, over this server's limit of {most:,} "
                               "(longread serve --max-prompt-tokens)", status=413, param="messages",
                               code="prompt_too_large")
        cap = body.cap()
        room = self.window - prompt
        if cap is None and room < 1:
            raise self._too_long(f"the prompt has {prompt:,} tokens, which leaves no room for a reply")
        if cap is not None and prompt + cap > self.window:
            raise self._too_long(f"the prompt has {prompt:,} tokens and max_tokens asks for {cap:,}: "
                                 f"{prompt + cap:,} in all")
        return messages, cap if cap is not None else room, prefix, prompt

    def _too_long(self, what: str) -> RequestError:
        return RequestError(f"{what}, over the window of {self.window:,} tokens of {self.name}; shorten the "
                            "messages or lower max_tokens (longread clients: --window "
                            f"{self.window} or less)", param="messages", code="context_length_exceeded")

    @staticmethod
    def _prefix(header: str | None, last: str) -> int | None:
        if header is None:
            return None
        # ASCII digits only, and few: str.isdigit() takes "²" and int() refuses 5,000 digits (a 500 otherwise).
        if not re.fullmatch(r"[0-9]{1,15}", header.strip()):
            raise RequestError(f"{CACHE_PREFIX_HEADER}: a number of characters, got {header[:40]!r}")
        return min(int(header), len(last)) or None

    # -- the call ----------------------------------------------------------------------------------------------------
    async def complete(self, messages: list[dict[str, str]], cap: int, temperature: float, prefix: int | None,
                       on_text: Any = None, tag: CallTag | None = None, cancel: Any = None) -> Completion:
        stats = self.stats
        stats.requests += 1
        stats.queued += 1
        waiting = True
        try:
            async with self._slots:
                stats.queued -= 1
                waiting = False
                stats.in_flight += 1
                stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
                try:
                    completion = await self.model.acomplete(messages, cap, temperature, window=self.window,
                                                            cache_prefix=prefix, on_text=on_text, tag=tag,
                                                            cancel=cancel)
                finally:
                    stats.in_flight -= 1
        except BaseException:
            if waiting:  # cancelled in the queue (the client went away)
                stats.queued -= 1
            stats.failed += 1
            raise
        stats.completed += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.cached_prompt_tokens += completion.cached_prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        return completion


def _tokenizer_card(model: ChatModel) -> dict[str, Any]:
    """`{"tokenizer": {"name": ...}}` for a model whose tokenizer its clients can fetch (the local engine's)."""
    tokenizer = getattr(model, "tokenizer", None)
    return {"tokenizer": {"name": tokenizer.name}} if callable(getattr(tokenizer, "export", None)) else {}


def _engine_failure(exc: BaseException) -> RequestError:
    return RequestError(f"the engine failed: {type(exc).__name__}: {' '.join(str(exc).split())}"[:1000], status=500,
                        kind="server_error")


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if error.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def create_app(model: ChatModel, *, name: str | None = None, aliases: Sequence[str] = (), api_key: str | None = None,
               window: int | None = None, concurrency: int | None = None, limits: ServerLimits | None = None
               ) -> FastAPI:
    """The server over `model`, answering to `name` (default: the model's name) and `aliases`; `concurrency`
    defaults to the model's batch size (`max_batch` of the local engine, 1 for others); `limits`: see limits.py."""
    concurrency = concurrency or max(1, int(getattr(model, "max_batch", 1) or 1))
    engine = Engine(model, name=name or model.name, aliases=aliases, window=window, concurrency=concurrency,
                    limits=limits)
    app = FastAPI(title="longread serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.add_middleware(BodyLimit, cap=engine.limits.body_cap(engine.window))
    expected = f"Bearer {api_key}".encode() if api_key else None

    def authorized(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise RequestError("a valid API key is needed: Authorization: Bearer KEY", status=401,
                               kind="authentication_error", code="invalid_api_key")

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(ClientGone)
    async def gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(RequestError(_validation_message(exc)).body(), status_code=400)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.name, "window": engine.window, **asdict(engine.stats)}

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "longread",
                "max_model_len": engine.window, **_tokenizer_card(engine.model)}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(engine.name)]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorized)])
    async def model_by_id(model_id: str) -> dict[str, Any]:
        if model_id not in engine.names:
            raise RequestError(f"model {model_id!r} is not served here; this server serves {engine.name!r}",
                               status=404, param="model", code="model_not_found")
        return model_card(model_id)

    @app.get("/v1/tokenizer", dependencies=[Depends(authorized)])
    async def tokenizer() -> JSONResponse:
        if not _tokenizer_card(engine.model):
            raise RequestError(f"{engine.name} is counted with tiktoken, which clients have already", status=404,
                               code="no_tokenizer")
        if engine.tokenizer_files is None:  # written once (a few MB of JSON), off the loop
            engine.tokenizer_files = await asyncio.to_thread(engine.model.tokenizer.export)  # type: ignore[attr-defined]
        return JSONResponse({"name": engine.model.tokenizer.name, "files": engine.tokenizer_files})

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        # Counting the prompt is the request's CPU work before the queue: off the loop that serves the others.
        messages, cap, prefix, _ = await asyncio.to_thread(engine.prepare, body,
                                                           request.headers.get(CACHE_PREFIX_HEADER))
        temperature = body.temperature or 0.0
        schema = body.output_schema()
        if schema is not None:
            return await _json_reply(engine, messages, cap, temperature, prefix, schema, body, request.receive)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(engine, messages, cap, temperature, prefix, include_usage),
                                     media_type="text/event-stream")
        try:
            completion = await until_done_or_gone(
                lambda cancel: engine.complete(messages, cap, temperature, prefix, cancel=cancel), request.receive,
                engine.limits.request_timeout)
        except ClientGone:
            engine.stats.cancelled += 1
            raise
        except RequestError as exc:
            engine.stats.cancelled += exc.status == 504
            raise
        except Exception as exc:
            raise _engine_failure(exc) from None
        # A JSONResponse as it is: FastAPI would otherwise walk the dict through jsonable_encoder first.
        return JSONResponse(reply(completion_id(), engine.name, completion.text, completion.finish_reason,
                                  completion.prompt_tokens, completion.completion_tokens,
                                  completion.cached_prompt_tokens))

    return app


async def _json_reply(engine: Engine, messages: list[dict[str, str]], cap: int, temperature: float,
                      prefix: int | None, schema: Any, body: ChatRequest, receive: Any) -> Any:
    """A reply that must be JSON for `schema`: checked, retried once (structured.py), its usage the sum of the
    calls made. Streamed, it is sent in one piece, since a reply that misses is not sent at all."""
    from ..structured import FORMATTER, StructuredOutputError, acomplete_json

    def calls(cancel: threading.Event) -> Any:  # the queue and counters, as any request; stopped as any request
        async def call(prompt: list[dict[str, str]]) -> Completion:
            first = len(prompt) == len(messages)  # the prefix header counts the first call's last message
            return await engine.complete(prompt, cap, temperature, prefix if first else None, tag=FORMATTER,
                                         cancel=cancel)

        return acomplete_json(engine.model, messages, schema, cap, complete=call)

    try:
        completions, value = await until_done_or_gone(calls, receive, engine.limits.request_timeout)
    except ClientGone:
        engine.stats.cancelled += 1
        raise
    except StructuredOutputError as exc:
        raise RequestError(str(exc), status=422, param="response_format", code="invalid_json_output") from None
    except RequestError as exc:
        engine.stats.cancelled += exc.status == 504
        raise
    except Exception as exc:
        raise _engine_failure(exc) from None
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    prompt = sum(c.prompt_tokens for c in completions)
    written = sum(c.completion_tokens for c in completions)
    cached = sum(c.cached_prompt_tokens for c in completions)
    reason = completions[-1].finish_reason
    if not body.stream:
        return JSONResponse(reply(completion_id(), engine.name, text, reason, prompt, written, cached))

    async def events() -> AsyncIterator[str]:
        ident, created = completion_id(), int(time.time())
        yield _sse(chunk(ident, engine.name, created, {"role": "assistant", "content": ""}))
        yield _sse(chunk(ident, engine.name, created, {"content": text}))
        yield _sse(chunk(ident, engine.name, created, {}, finish(reason)))
        if body.stream_options and body.stream_options.include_usage:
            yield _sse(chunk(ident, engine.name, created, None, usage_=usage(prompt, written, cached)))
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


async def _stream(engine: Engine, messages: list[dict[str, str]], cap: int, temperature: float, prefix: int | None,
                  include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: the role, the text as the engine writes it, the finish reason, usage, [DONE].

    The engine may call `on_text` from its worker thread (the local engine) or from the event loop (an async
    backend); call_soon_threadsafe queues the pieces in order either way, and the end after them."""
    ident, created = completion_id(), int(time.time())
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    cancel = threading.Event()
    deadline = loop.time() + engine.limits.request_timeout

    def on_text(piece: str) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    task = asyncio.ensure_future(engine.complete(messages, cap, temperature, prefix, on_text=on_text, cancel=cancel))
    task.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
    try:
        yield _sse(chunk(ident, engine.name, created, {"role": "assistant", "content": ""}))
        while (piece := await asyncio.wait_for(pieces.get(), max(0.0, deadline - loop.time()))) is not None:
            yield _sse(chunk(ident, engine.name, created, {"content": piece}))
    except asyncio.TimeoutError:
        engine.stats.cancelled += 1
        yield _sse(RequestError(f"the request took longer than this server's limit of "
                                f"{engine.limits.request_timeout:g} s (longread serve --request-timeout)",
                                status=504, kind="timeout", code="request_timeout").body())
        return
    except BaseException:  # the client went away (Starlette cancels the stream): stop the engine for nobody
        engine.stats.cancelled += 1
        raise
    finally:
        if not task.done():
            cancel.set()
            task.cancel()
    try:
        completion = task.result()
    except Exception as exc:  # the headers are sent: the error goes in the stream, as OpenAI sends it
        yield _sse(_engine_failure(exc).body())
        return
    yield _sse(chunk(ident, engine.name, created, {}, finish(completion.finish_reason)))
    if include_usage:
        yield _sse(chunk(ident, engine.name, created, None, usage_=usage(
            completion.prompt_tokens, completion.completion_tokens, completion.cached_prompt_tokens)))
    yield _sse("[DONE]")
