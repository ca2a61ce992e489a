"""One pause for every call of a model: a rate limit (429) met by one call holds back the others too.

Each call already backs off on its own (tenacity, honouring Retry-After). With N documents read at once that is
not enough: the other N-1 chains would keep sending requests into the limit, each collecting its own 429s. So
the model keeps one `SharedPause`: when a call is rate limited, no call of that model starts (or retries)
before the wait that call was given has passed. Threads and event loops both wait on it.
"""

from __future__ import annotations

import asyncio
import threading
import time


class SharedPause:
    def __init__(self) -> None:
        self._until = 0.0  # time.monotonic() before which no call starts
        self._lock = threading.Lock()
        self.pauses = 0  # how many rate limits paused the calls (tests and --verbose read it)

    def hold(self, seconds: float) -> None:
        """No call starts for `seconds` from now (a longer pause already set stands)."""
        if seconds <= 0:
            return
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)
            self.pauses += 1

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - time.monotonic())

    def wait(self) -> None:
        while (left := self.remaining()) > 0:
            time.sleep(left)

    async def await_(self) -> None:
        while (left := self.remaining()) > 0:
            await asyncio.sleep(left)
