"""Ctrl-C with the local engine: its batching thread stops before the interpreter exits.

A daemon thread still inside torch when Python exits aborts the process ("terminate called without an active
exception", exit 134) instead of the clean exit 130 the command line promises. `stop_all` (called by the
command line on Ctrl-C, and atexit) fails the calls in flight and joins the driver thread."""

from __future__ import annotations

import threading

import pytest

from longread.backends import stop_local_engines
from longread.backends.local import batching
from longread.backends.local.generation import Decoding

from .test_local_engine import tiny_llama


def test_stopping_fails_the_call_in_flight_and_ends_the_driver_thread():
    batcher = batching.batcher_for(tiny_llama())
    admitted, go_on = threading.Event(), threading.Event()

    def start():  # the driver runs this when it admits the call: hold it there, mid-call
        admitted.set()
        go_on.wait(30)
        return None, list(range(2000)), 0  # a long prompt: its prefill would take many chunks

    request = batching.Request(start, Decoding(8, {0}), policy=None, prefill_chunk=16)
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            batcher.submit(request)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert admitted.wait(30)
    driver = batcher._driver  # (the test looks at the thread it must end)
    assert driver is not None and driver.is_alive()
    threading.Timer(0.2, go_on.set).start()  # the call goes on while stop waits for the driver

    stop_local_engines()

    caller.join(30)
    assert not driver.is_alive()  # joined: nothing of torch runs when the interpreter exits
    assert len(outcome) == 1 and isinstance(outcome[0], KeyboardInterrupt)
    assert request.prefill_tokens == 0  # stopped before its prefill, not after all 2000 tokens
    with pytest.raises(KeyboardInterrupt):
        batcher.submit(batching.Request(start, Decoding(8, {0}), policy=None))  # no new call after a stop


def test_after_a_stop_the_same_model_gets_a_fresh_batcher():
    # A notebook (or a console) that caught the Ctrl-C goes on with the model it holds: its next call is served.
    model = tiny_llama()
    stopped = batching.batcher_for(model)
    stop_local_engines()
    fresh = batching.batcher_for(model)
    assert fresh is not stopped
    with pytest.raises(KeyboardInterrupt):
        stopped.submit(batching.Request(lambda: None, Decoding(8, {0}), policy=None))
    assert not fresh._stopping  # (the flag the submit above raised on)


def test_stop_without_a_local_model_loads_nothing(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "longread.backends.local.batching")
    stop_local_engines()  # no import of the engine (or torch) just to stop it
    assert "longread.backends.local.batching" not in sys.modules
