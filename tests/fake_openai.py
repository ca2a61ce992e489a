"""A fake OpenAI-compatible chat server for the fault suite: started by the tests on 127.0.0.1, it injects faults
(429, 500, 503, dropped connections, stalls) at a set rate and logs every request.

litellm reaches it as `openai/NAME` with `api_base=server.url` (or OPENAI_API_BASE in a subprocess's environment).
The standard library's threading HTTP server is enough for a test double of one endpoint; no dependency is added.
It is not `longread.serve.fake.FakeProvider` (the throughput tests' provider, `longread serve`'s own app): the
faults here are below HTTP (a connection closed without an answer, a request held past the client's timeout,
a client killed while it waits), which an ASGI app behind uvicorn cannot give on purpose.

Each answer is derived from a hash of the request's messages, so a retried request gets the same answer, and
every answer starts with a mark (`note-<hash>`) that the tests look for in later requests.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FAULTS = ("429", "500", "503", "drop", "stall")
WORDS = "the keeper counted boats at dawn and wrote each number in a green book".split()


@dataclass
class Request:
    """One request as the server saw it: its number (from 1), messages, and what it did (`fault` or `reply`)."""

    number: int
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None
    fault: str | None = None
    reply: str | None = None
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def prompt(self) -> str:
        return "\n".join(str(m.get("content") or "") for m in self.messages)

    @property
    def key(self) -> str:
        """The same for the same prompt: a repeated call has the key of the first."""
        return hashlib.sha256(json.dumps(self.messages, sort_keys=True).encode()).hexdigest()[:12]


def reply_for(request: Request, words: int = 12) -> str:
    rng = random.Random(request.key)
    return f"note-{request.key} " + " ".join(rng.choice(WORDS) for _ in range(words))


@dataclass
class FakeOpenAI:
    """`with FakeOpenAI(fault_rate=0.3, seed=1) as server:` ... `server.url`, `server.log`, `server.answered()`.

    - `fault_rate`: the share of requests that get a fault (drawn with `seed`, so a run is reproducible); the
      faults take the kinds of `faults` in turn, so every kind comes up;
    - `stall_seconds`: how long a stalled request waits before its connection is closed (longer than the client's
      timeout, so the client gives up first);
    - `error_text`: the message of an injected HTTP error (a provider may echo what it was sent);
    - `on_request(request)`: called before each answer (a test can block there, or kill the client).
    """

    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    seed: int = 0
    stall_seconds: float = 1.0
    error_text: str = "injected failure"
    on_request: Callable[[Request], None] | None = None
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)
        self._faults_given = 0
        self._server: ThreadingHTTPServer | None = None

    # -- life ------------------------------------------------------------------------------------------------------
    def __enter__(self) -> "FakeOpenAI":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- the log ---------------------------------------------------------------------------------------------------
    def answered(self) -> list[Request]:
        """The requests that got an answer, in order."""
        with self._lock:
            return [r for r in self.log if r.reply is not None]

    def _admit(self, body: dict[str, Any]) -> Request:
        with self._lock:
            request = Request(len(self.log) + 1, body.get("messages") or [], bool(body.get("stream")),
                              body.get("max_tokens"))
            if self._random.random() < self.fault_rate:
                request.fault = self.faults[self._faults_given % len(self.faults)]
                self._faults_given += 1
            self.log.append(request)
            return request


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the log is FakeOpenAI.log
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        request = self.fake._admit(body)
        if self.fake.on_request is not None:
            self.fake.on_request(request)
        if request.fault in ("drop", "stall"):
            if request.fault == "stall":
                time.sleep(self.fake.stall_seconds)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if request.fault is not None:
            self._send_json(int(request.fault), {"error": {"message": self.fake.error_text, "type": "server_error",
                                                           "code": request.fault}})
            return
        text = reply_for(request)
        if request.max_tokens:
            text = " ".join(text.split()[: max(1, request.max_tokens)])
        prompt_tokens = len(request.prompt) // 4
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}
        request.reply = text
        if request.stream:
            self._send_stream(text, usage)
        else:
            self._send_json(200, {
                "id": f"chatcmpl-{request.number}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            })

    def _send_json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(payload)

    def _send_stream(self, text: str, usage: dict[str, int]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        words = text.split(" ")
        pieces = [" ".join(words[: len(words) // 2]) + " ", " ".join(words[len(words) // 2:])]
        base = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": "fake"}
        for piece in pieces:
            self._event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()
