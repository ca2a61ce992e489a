"""Bodies written once (longread/backends/calls.py): the sync and the async driver make the same calls in the same
order and return the same value; a failure reaches the body at its yield; Blocking and Together keep the event loop
free and run bodies at once."""

from __future__ import annotations

import asyncio
import threading

import pytest

from longread.backends.base import CallTag
from longread.backends.calls import Blocking, Call, Together, Twin, adrive, drive
from longread.errors import WindowExceeded
from longread.testing import MockModel


def two_calls(model: MockModel):
    """A worker's call, then a manager's call that quotes the worker's reply."""
    notes = yield Call(model, [{"role": "user", "content": "read part 1"}], 16, tag=CallTag("worker", 0))
    answer = yield Call(model, [{"role": "user", "content": f"answer from {notes.text}"}], 16,
                        tag=CallTag("manager"))
    return notes.text, answer.text


def routed() -> MockModel:
    return MockModel(replies={"worker": "the tide turns at noon", "manager": lambda call: call.prompt.upper()})


def test_both_drivers_make_the_same_calls_in_order_and_return_the_same_value():
    sync_model, async_model = routed(), routed()
    by_drive = drive(two_calls(sync_model))
    by_adrive = asyncio.run(adrive(two_calls(async_model)))
    assert by_drive == by_adrive == ("the tide turns at noon", "ANSWER FROM THE TIDE TURNS AT NOON")
    assert [(c.agent, c.prompt) for c in sync_model.calls] == [(c.agent, c.prompt) for c in async_model.calls]
    assert [c.agent for c in sync_model.calls] == ["worker", "manager"]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_failed_call_reaches_the_body_at_its_yield(driver):
    run = drive if driver == "sync" else (lambda steps: asyncio.run(adrive(steps)))
    model = MockModel(context_window=64)
    too_long = [{"role": "user", "content": "word " * 200}]

    def handled():
        try:
            yield Call(model, too_long, 8)
        except WindowExceeded:
            return "kept the answer so far"

    assert run(handled()) == "kept the answer so far"

    def unhandled():
        yield Call(model, too_long, 8)

    with pytest.raises(WindowExceeded):
        run(unhandled())
    assert model.calls == []  # the window check refused both before the model ran


def test_blocking_work_runs_in_place_when_sync_and_off_the_loop_when_async():
    def where():
        return (yield Blocking(threading.get_ident))

    assert drive(where()) == threading.get_ident()

    async def on_loop():
        return threading.get_ident(), await adrive(where())

    loop_thread, worked_in = asyncio.run(on_loop())
    assert worked_in != loop_thread


def test_together_runs_bodies_at_once_and_keeps_their_order():
    arrived = threading.Barrier(3, timeout=10)  # only passes when all three wait at the same time

    def one(i: int):
        yield Blocking(arrived.wait)
        return i, threading.current_thread().name

    outcomes = drive(iter_of(Together([one(i) for i in range(3)], thread_name="longread-path")))
    assert [i for i, _ in outcomes] == [0, 1, 2]
    assert all(name.startswith("longread-path") for _, name in outcomes)

    arrived.reset()
    outcomes = asyncio.run(adrive(iter_of(Together([one(i) for i in range(3)]))))
    assert [i for i, _ in outcomes] == [0, 1, 2]


def test_twin_takes_the_form_of_its_driver():
    async def asynchronous(x):
        return f"async {x}"

    def body():
        return (yield Twin(lambda x: f"sync {x}", asynchronous, "call"))

    assert drive(body()) == "sync call"
    assert asyncio.run(adrive(body())) == "async call"


def iter_of(effect):
    """A body of one effect."""
    return (yield effect)
