"""A stand-in OpenAI-compatible provider on 127.0.0.1, for tests and benchmarks (no model, no network).

    with FakeProvider(latency=0.5, capacity=16) as provider:
        ... --model openai/fake --api-base provider.base_url ...
        provider.peak_in_flight, provider.arrivals, provider.answered

It is `longread serve`'s own app over a MockModel that waits `latency` seconds per call (on the event loop, so
`capacity` calls wait at once); its replies are derived from a hash of the messages, so the same prompt always
gets the same reply and a run's notes can be compared with another's. A middleware counts the requests in flight
(arrived and not yet answered, queued ones included) and answers the arrivals `rate_limit` picks with a 429 and a
Retry-After, as a provider's rate limiter does, and the requests `reject` picks with a 400.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..backends.base import Completion
from ..backends.mock import MockModel

RateLimit = Callable[[int], "float | None"]  # 1-based arrival number -> Retry-After seconds, or None to serve it
Reject = Callable[[dict], "str | None"]  # the request's body -> the message of a 400, or None to serve it


@dataclass
class SlowMock(MockModel):
    """A MockModel whose calls take `latency` seconds (asyncio.sleep: many can wait at once)."""

    latency: float = 0.5
    name: str = "fake"

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None) -> Completion:
        time.sleep(self.latency)
        return super()._complete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)

    async def _acomplete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None
                         ) -> Completion:
        await asyncio.sleep(self.latency)
        return MockModel._complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)


@dataclass
class Arrival:
    number: int
    at: float  # time.monotonic()
    status: int = 0
    answered_at: float = 0.0
    body: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Background:
    """Any ASGI app served by uvicorn on 127.0.0.1 in a background thread while the `with` block lasts."""

    def __init__(self, app: Any, *, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Background":
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error", access_log=False,
                                lifespan="off", backlog=256)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="background-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "Background":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeProvider:
    """The stand-in server, run by uvicorn in a background thread while the `with` block lasts."""

    def __init__(self, *, latency: float = 0.0, capacity: int = 64, rate_limit: RateLimit | None = None,
                 reject: Reject | None = None, completion_tokens: int = 24, api_key: str | None = None, record_bodies: bool = True,
                 context_window: int = 1_000_000):
        from .app import create_app

        self.model = SlowMock(latency=latency, completion_tokens=completion_tokens, context_window=context_window)
        self.app = create_app(self.model, name="fake", aliases=("hosted_vllm/fake",), api_key=api_key,
                              concurrency=capacity)
        self.rate_limit = rate_limit
        self.reject = reject
        self.record_bodies = record_bodies
        self.arrivals: list[Arrival] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._background = Background(self.app)
        self.port = self._background.port
        self.base_url = f"{self._background.url}/v1"
        self.app.middleware("http")(self._count)

    @property
    def engine(self) -> Any:
        return self.app.state.engine

    @property
    def answered(self) -> list[Arrival]:
        """The chat requests answered with a reply (status 200), in arrival order."""
        return [a for a in self.arrivals if a.status == 200 and a.body]

    async def _count(self, request: Any, call_next: Any) -> Any:
        from fastapi.responses import JSONResponse

        if not request.url.path.endswith("/chat/completions"):
            return await call_next(request)
        with self._lock:
            arrival = Arrival(len(self.arrivals) + 1, time.monotonic())
            self.arrivals.append(arrival)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.record_bodies:
                import json

                try:
                    arrival.body = json.loads(await request.body() or b"{}")
                except ValueError:  # the app answers it (a 400); the record keeps what can be kept
                    arrival.body = {}
                arrival.body["headers"] = dict(request.headers)
            wait = self.rate_limit(arrival.number) if self.rate_limit else None
            refusal = self.reject(arrival.body) if self.reject and arrival.body else None
            if refusal is not None:
                response: Any = JSONResponse({"error": {"message": refusal, "type": "invalid_request_error",
                                                        "param": None, "code": None}}, status_code=400)
            elif wait is not None:
                response = JSONResponse(
                    {"error": {"message": "rate limited (the fake provider's script)", "type": "rate_limit_error",
                               "param": None, "code": "rate_limit_exceeded"}},
                    status_code=429, headers={"Retry-After": f"{wait:g}"})
            else:
                response = await call_next(request)
            arrival.status = response.status_code
            return response
        finally:
            arrival.answered_at = time.monotonic()
            with self._lock:
                self.in_flight -= 1

    # -- the server's life -------------------------------------------------------------------------------------------
    def start(self) -> "FakeProvider":
        self._background.start()
        return self

    def stop(self) -> None:
        self._background.stop()

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m longread.serve.fake --latency 0.5 --capacity 16 --port 8100`: the stand-in in its own process
    (benchmarks/throughput.py runs it so that its event loop does not share the client's interpreter). It is
    `longread serve`'s app over the slow mock alone, without the counting middleware, so it costs per call what
    `longread serve` costs."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--completion-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    from .app import create_app

    model = SlowMock(latency=args.latency, completion_tokens=args.completion_tokens)
    app = create_app(model, name="fake", concurrency=args.capacity)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=256)


if __name__ == "__main__":
    main()
