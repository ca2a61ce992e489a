"""What litellm knows about providers and models, read from the data files it ships, without importing it.

`import litellm` takes seconds; a run must say within a second that `foo/bar` names no provider or that
OPENAI_API_KEY is not set, and `longread models` must start at once. litellm ships its price table
(`model_prices_and_context_window_backup.json`, the one LITELLM_LOCAL_MODEL_COST_MAP makes it use) and its
provider list (`provider_endpoints_support_backup.json`); this module reads those two JSON files.

The environment variables each provider's key comes from are litellm's too (`litellm.validate_environment`), but
that function lives in the module whose import is slow, so the common providers' variables are listed here;
tests/test_catalog.py checks this table against `litellm.validate_environment` so the two cannot drift. For a
provider not in the table, `missing_keys` asks litellm itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

PRICE_FILE = "model_prices_and_context_window_backup.json"
PROVIDER_FILE = "provider_endpoints_support_backup.json"

# provider -> the requirements, each a tuple of variables any one of which satisfies it.
KEY_VARIABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    "openai": (("OPENAI_API_KEY",),),
    "anthropic": (("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),),
    "azure": (("AZURE_API_KEY",), ("AZURE_API_BASE",), ("AZURE_API_VERSION",)),
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"),),
    "mistral": (("MISTRAL_API_KEY",),),
    "groq": (("GROQ_API_KEY",),),
    "cohere": (("COHERE_API_KEY",),),
    "deepseek": (("DEEPSEEK_API_KEY",),),
    "openrouter": (("OPENROUTER_API_KEY",),),
    "together_ai": (("TOGETHERAI_API_KEY",),),
    "fireworks_ai": (("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY", "FIREWORKSAI_API_KEY", "FIREWORKS_AI_TOKEN"),),
    "xai": (("XAI_API_KEY",),),
    "perplexity": (("PERPLEXITYAI_API_KEY",),),
    "deepinfra": (("DEEPINFRA_API_KEY",),),
    "cerebras": (("CEREBRAS_API_KEY",),),
    "replicate": (("REPLICATE_API_KEY",),),
    "nvidia_nim": (("NVIDIA_NIM_API_KEY",),),
    "huggingface": (("HUGGINGFACE_API_KEY",),),
    "novita": (("NOVITA_API_KEY",),),
    "nebius": (("NEBIUS_API_KEY",),),
}
# Self-served models: a server address, no key (an --api-base or the provider's default address).
NO_KEY = frozenset({"ollama", "ollama_chat", "hosted_vllm", "vllm", "lm_studio", "llamafile", "openai_like",
                    "custom_openai", "xinference", "oobabooga", "triton", "litellm_proxy", "docker_model_runner"})


def _litellm_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


@lru_cache(maxsize=1)
def price_table() -> dict[str, dict[str, Any]]:
    """litellm's bundled model table: name -> {litellm_provider, mode, max_input_tokens, *_cost_per_token, ...}."""
    folder = _litellm_dir()
    if folder is None:
        return {}
    try:
        data = json.loads((folder / PRICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {name: info for name, info in data.items() if isinstance(info, dict) and name != "sample_spec"}


@lru_cache(maxsize=1)
def providers() -> frozenset[str]:
    """Every provider name litellm routes `PROVIDER/MODEL` strings to."""
    names = {str(info.get("litellm_provider")) for info in price_table().values() if info.get("litellm_provider")}
    folder = _litellm_dir()
    if folder is not None:
        try:
            names.update(json.loads((folder / PROVIDER_FILE).read_text(encoding="utf-8")).get("providers", {}))
        except (OSError, ValueError, AttributeError):
            pass
        names.update(_enum_providers(folder / "types" / "utils.py"))
    return frozenset(names | set(KEY_VARIABLES) | NO_KEY)


def _enum_providers(source: Path) -> set[str]:
    """The values of litellm's `LlmProviders` enum (the list `litellm.provider_list` is made from), read from its
    source with `ast`: importing that module imports all of litellm."""
    import ast

    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "LlmProviders":
            return {item.value.value for item in node.body if isinstance(item, ast.Assign)
                    and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str)}
    return set()


@dataclass(frozen=True)
class ModelCard:
    """One chat model of the table, with its provider, window and prices (USD per token)."""

    model: str  # the string to pass to --model
    provider: str
    window: int | None
    input_cost: float
    output_cost: float

    @classmethod
    def of(cls, model: str, provider: str, info: Mapping[str, Any]) -> "ModelCard":
        window = info.get("max_input_tokens") or info.get("max_tokens")
        return cls(model, provider, int(window) if isinstance(window, (int, float)) else None,
                   float(info.get("input_cost_per_token") or 0.0), float(info.get("output_cost_per_token") or 0.0))


def split_model(model: str) -> tuple[str | None, str]:
    """("openai", "gpt-4o-mini") for "openai/gpt-4o-mini"; (the table's provider, name) for a bare table name."""
    head, sep, rest = model.partition("/")
    if sep and head in providers():
        return head, rest
    info = price_table().get(model)
    if info and info.get("litellm_provider"):
        return str(info["litellm_provider"]), model
    return None, model


def card(model: str) -> ModelCard | None:
    """The table's entry for a model string, if it has one."""
    provider, name = split_model(model)
    if provider is None:
        return None
    table = price_table()
    for key in (model, f"{provider}/{name}", name):
        info = table.get(key)
        if info and (info.get("litellm_provider") == provider or key == model):
            return ModelCard.of(model, provider, info)
    return None


def chat_models(provider: str | None = None) -> list[ModelCard]:
    """The table's chat models (of one provider), as --model strings, sorted."""
    cards = []
    for name, info in price_table().items():
        owner = info.get("litellm_provider")
        if info.get("mode") != "chat" or not owner or (provider and owner != provider):
            continue
        model = name if name.startswith(f"{owner}/") else f"{owner}/{name}"
        cards.append(ModelCard.of(model, str(owner), info))
    return sorted(cards, key=lambda c: (c.provider, c.model))


def key_requirements(provider: str) -> tuple[tuple[str, ...], ...] | None:
    """The key variables of a provider in the table; () for self-served ones; None when not in the table."""
    if provider in NO_KEY:
        return ()
    return KEY_VARIABLES.get(provider)


def missing_keys(model: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The environment variables a run with this model needs and lacks (the first name of each requirement).

    Providers outside the table are asked of `litellm.validate_environment` (this imports litellm)."""
    environ = os.environ if environ is None else environ
    provider, _ = split_model(model)
    if provider is None:
        return []
    requirements = key_requirements(provider)
    if requirements is None:
        from .model import _litellm

        if environ is not os.environ:
            raise ValueError("litellm checks only the process environment")
        return list(_litellm().validate_environment(model).get("missing_keys") or [])
    return [names[0] for names in requirements if not any(environ.get(name) for name in names)]
