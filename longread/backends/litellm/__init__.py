"""litellm: any hosted or self-served chat model (`PROVIDER/MODEL`), as one backend.

    model.py     LiteLLMModel: the ChatModel over litellm.completion (retries, caps, streaming, credentials)
    catalog.py   what litellm knows about providers, prices and windows, read without importing litellm
    pacing.py    one pause for every call of a model after a rate limit
    BACKEND      below: the registry's fallback for model strings no other backend claims (its factory, the
                 checks before any call, the `longread models` rows)

Importing this package imports neither litellm nor model.py.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

from ...errors import ModelError
from ..backend import Backend, ModelRow

if TYPE_CHECKING:
    from ..base import ChatModel


def _build(model: str, **options: Any) -> ChatModel:
    from .model import LiteLLMModel

    options.pop("kv", None)  # KV policies are a local-backend concept
    if options.get("api_base") and options.get("api_key") is None:
        from . import catalog

        if catalog.missing_keys(model):
            # A self-hosted server (longread serve, vLLM) may take no key, but OpenAI's SDK refuses to send a request
            # without one; a server that does want a key answers 401, and that error names the variable to set.
            options["api_key"] = "no-key"
    return LiteLLMModel(model, **options)


def _check(model: str, need_key: bool) -> None:
    from . import catalog

    if not catalog.providers():
        raise ModelError(f"--model {model}: litellm is not installed, so only local models can run")
    provider, name = catalog.split_model(model)
    if provider is None:
        head, sep, _ = model.partition("/")
        if sep:
            raise ModelError(f"--model {model}: {head!r} is not a provider litellm knows (`longread models` lists "
                             "them; local models are `local` or `hf:PATH`)")
        raise ModelError(f"--model {model}: no provider; write PROVIDER/MODEL, e.g. openai/gpt-4o-mini "
                         "(`longread models` lists them)")
    if not name:
        raise ModelError(f"--model {model}: the model name after {provider}/ is missing")
    if need_key:
        missing = catalog.missing_keys(model)
        if missing:
            names = " and ".join(missing)
            raise ModelError(f"--model {model}: set {names} (the {provider} API key{'s' if len(missing) > 1 else ''}) "
                             "in the environment; a dry run (--dry-run) needs none")


def _rows() -> Iterable[ModelRow]:
    from . import catalog

    counts: dict[str, list[catalog.ModelCard]] = {}
    for card in catalog.chat_models():
        counts.setdefault(card.provider, []).append(card)
    for provider, cards in sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        requirements = catalog.key_requirements(provider)
        if requirements is None:
            note = "key: see litellm's docs"
        elif not requirements:
            note = "no key (a server address)"
        else:
            missing = [names[0] for names in requirements if not any(os.environ.get(n) for n in names)]
            note = "key " + " ".join(n[0] for n in requirements) + (": not set" if missing else " set")
        priced = [c for c in cards if c.input_cost > 0 and c.output_cost > 0 and c.window] or cards
        cheapest = min(priced, key=lambda c: (c.input_cost + c.output_cost, c.model))
        yield ModelRow(f"{provider}/MODEL", "litellm", f"{len(cards)} chat models, e.g. {cheapest.model}",
                       cheapest.window, cheapest.input_cost, cheapest.output_cost, note=note)


BACKEND = Backend("litellm", _build, "PROVIDER/MODEL: any litellm model (openai/gpt-4o-mini, anthropic/..., "
                  "ollama/llama3.1, hosted_vllm/...)", check=_check, rows=_rows)
