"""longread's reading of litellm's data files (no litellm import) agrees with litellm itself."""

from __future__ import annotations

import pytest

from longread.backends.litellm import catalog

litellm = pytest.importorskip("litellm")


def test_every_provider_litellm_routes_is_known():
    assert set(litellm.provider_list) <= catalog.providers()


@pytest.mark.parametrize("provider", sorted(catalog.KEY_VARIABLES))
def test_the_key_table_agrees_with_litellm_validate_environment(provider, monkeypatch):
    names = {name for requirement in catalog.KEY_VARIABLES[provider] for name in requirement}
    for name in names:
        monkeypatch.delenv(name, raising=False)
    model = f"{provider}/some-model"
    assert not litellm.validate_environment(model)["keys_in_environment"]
    assert catalog.missing_keys(model) == [requirement[0] for requirement in catalog.KEY_VARIABLES[provider]]
    for requirement in catalog.KEY_VARIABLES[provider]:
        monkeypatch.setenv(requirement[-1], "test-value")  # any one variable of a requirement satisfies it
    assert litellm.validate_environment(model)["keys_in_environment"]
    assert catalog.missing_keys(model) == []


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "gpt-4o-mini", "anthropic/claude-sonnet-4-5",
                                   "ollama/llama3.1"])
def test_provider_window_and_prices_match_litellm(model):
    provider, _ = catalog.split_model(model)
    assert provider == litellm.get_llm_provider(model)[1]
    card = catalog.card(model)
    if provider == "ollama":
        return  # litellm would ask the Ollama server; we do not
    info = litellm.get_model_info(model)
    assert card is not None and card.window == info["max_input_tokens"]
    assert (card.input_cost, card.output_cost) == (info["input_cost_per_token"], info["output_cost_per_token"])


def test_unknown_providers_and_bare_names_resolve_to_nothing():
    assert catalog.split_model("foo/bar")[0] is None
    assert catalog.split_model("not-a-model-anyone-has")[0] is None
    assert catalog.missing_keys("ollama/llama3.1", environ={}) == []
