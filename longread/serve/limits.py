"""What one request may cost `longread serve`: its body's size, its prompt's tokens, its time, and nothing once its
client has gone.

    ServerLimits       the settings (`longread serve --max-request-bytes --max-prompt-tokens --request-timeout`)
    BodyLimit          ASGI middleware: a body over the cap is a 413 before it is read whole (nothing is parsed)
    until_done_or_gone runs an engine call until it ends, its client disconnects, or its deadline passes; in the
                       last two cases the call is told to stop (the local engine stops at its next token)

Written by hand: Starlette and uvicorn cap header sizes, not bodies, and leave a handler running when its client
disconnects (vLLM aborts such a request; so do we).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .protocol import RequestError

BYTES_PER_WINDOW_TOKEN = 64  # a prompt that fills the window, JSON-escaped, stays far under this many bytes a token
MIN_REQUEST_BYTES = 1 << 20
DEFAULT_REQUEST_TIMEOUT = 600.0  # seconds from arrival to the last token: a full window on a CPU fits


@dataclass(frozen=True)
class ServerLimits:
    """`max_request_bytes`: the body's cap (default: 64 bytes per token of the window, at least 1 MiB);
    `max_prompt_tokens`: the prompt's cap (default: the window alone); `request_timeout`: seconds a request may
    take in all, queue included."""

    max_request_bytes: int | None = None
    max_prompt_tokens: int | None = None
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_prompt_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 < self.request_timeout < float("inf"):
            raise ValueError(f"request_timeout must be a positive, finite number of seconds, got {self.request_timeout}")

    def body_cap(self, window: int) -> int:
        return self.max_request_bytes or max(MIN_REQUEST_BYTES, BYTES_PER_WINDOW_TOKEN * window)


def too_large(size: int, cap: int, *, exact: bool) -> RequestError:
    what = f"{size:,} bytes" if exact else f"over {cap:,} bytes"
    return RequestError(f"the request body is {what}, over this server's limit of {cap:,} bytes "
                        "(longread serve --max-request-bytes)", status=413, code="request_too_large")


class BodyLimit:
    """Reads a request's body up to `cap` bytes before the app sees it (then replays it): a declared length over the
    cap is refused unread, a streamed body as soon as it passes the cap. Only /v1/* requests are read this way."""

    def __init__(self, app: Any, cap: int):
        self.app, self.cap = app, cap

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.cap:
            await _refuse(send, too_large(int(declared), self.cap, exact=True))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.cap:
                await _refuse(send, too_large(size, self.cap, exact=False))
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


async def _refuse(send: Callable, error: RequestError) -> None:
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns when the client has gone (the body is read already, so the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the call was stopped and nobody is answered."""


async def until_done_or_gone(call: Callable[[threading.Event], Awaitable[Any]], receive: Callable, timeout: float
                             ) -> Any:
    """`call(cancel)`'s result; ClientGone when the client disconnects first, a 504 RequestError when `timeout`
    seconds pass first. Either way `cancel` is set and the call's task cancelled, so the engine stops working
    for nobody (the local engine checks `cancel` at every token)."""
    cancel = threading.Event()
    work = asyncio.ensure_future(call(cancel))
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        done, _ = await asyncio.wait({work, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        if gone in done:
            raise ClientGone()
        raise RequestError(f"the request took longer than this server's limit of {timeout:g} s "
                           "(longread serve --request-timeout)", status=504, kind="timeout", code="request_timeout")
    finally:
        gone.cancel()
        if not work.done():
            cancel.set()
            work.cancel()
