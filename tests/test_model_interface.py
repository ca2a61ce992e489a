"""The shared chat interface: window check before any call, MockModel recording, the model-string registry."""

from __future__ import annotations

import asyncio

import pytest

from longread import WindowExceeded
from longread.backends import get_model, is_local_model
from longread.testing import MockModel

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about lighthouses."}]


def test_window_exceeded_is_raised_before_the_model_runs():
    model = MockModel()
    prompt = model.count_prompt_tokens(MESSAGES)
    with pytest.raises(WindowExceeded) as info:
        model.complete(MESSAGES, max_new_tokens=50, window=prompt + 49)
    assert model.call_count == 0 and model.calls == []
    assert info.value.prompt_tokens == prompt and info.value.window == prompt + 49
    model.complete(MESSAGES, max_new_tokens=50, window=prompt + 50)  # exactly at the window is allowed
    assert model.call_count == 1


def test_window_check_applies_to_the_async_twin_too():
    model = MockModel()
    with pytest.raises(WindowExceeded):
        asyncio.run(model.acomplete(MESSAGES, max_new_tokens=10, window=5))
    assert model.call_count == 0


def test_model_context_window_is_a_window_too():
    model = MockModel(context_window=20)
    with pytest.raises(WindowExceeded):
        model.complete(MESSAGES, max_new_tokens=10)


def test_mock_output_is_deterministic_sized_and_recorded():
    a, b = MockModel(completion_tokens=7), MockModel(completion_tokens=7)
    first, second = a.complete(MESSAGES, 100), b.complete(MESSAGES, 100)
    assert first.text == second.text and first.completion_tokens == 7
    assert a.tokenizer.count(first.text) == 7
    other = a.complete([{"role": "user", "content": "Something else entirely."}], 100)
    assert other.text != first.text
    capped = a.complete(MESSAGES, 3)
    assert capped.completion_tokens == 3 and capped.finish_reason == "length"
    assert [c.max_new_tokens for c in a.calls] == [100, 100, 3]
    assert a.calls[0].messages == MESSAGES


def test_mock_injected_failures_and_responder():
    model = MockModel(fail_on_calls={2}, responder=lambda m: "fixed reply")
    assert model.complete(MESSAGES, 10).text == "fixed reply"
    with pytest.raises(RuntimeError, match="call 2"):
        model.complete(MESSAGES, 10)
    assert model.complete(MESSAGES, 10).text == "fixed reply"
    assert model.call_count == 3 and len(model.calls) == 2


def test_registry_routes_model_strings():
    assert isinstance(get_model("mock:5"), MockModel)
    assert get_model("mock:5").completion_tokens == 5
    existing = MockModel()
    assert get_model(existing) is existing
    assert is_local_model("local") and is_local_model("hf:/models/x") and not is_local_model("openai/gpt-4o-mini")


def test_max_new_tokens_must_be_positive():
    with pytest.raises(ValueError):
        MockModel().complete(MESSAGES, 0)
