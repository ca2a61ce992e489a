"""Embedders: one protocol, normalised float32, explicit dims; the real MiniLM model once."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from longread.errors import ModelError
from longread.memory import Embedder, HashingEmbedder, LiteLLMEmbedder, MiniLMEmbedder, words


def test_hashing_embedder_is_normalised_deterministic_and_lexical():
    embedder = HashingEmbedder(128)
    assert isinstance(embedder, Embedder) and embedder.dims == 128
    docs = embedder.embed_documents(["The white whale.", "Bread in the oven.", ""])
    assert docs.dtype == np.float32 and docs.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(docs[:2], axis=1), 1.0, rtol=1e-6)
    assert not docs[2].any()  # no words, no direction
    query = embedder.embed_query("white whale")
    assert query.shape == (128,)
    np.testing.assert_array_equal(query, HashingEmbedder(128).embed_query("WHITE whale!"))  # case and punctuation fold
    assert docs[0] @ query > docs[1] @ query
    assert embedder.embed_documents([]).shape == (0, 128)
    with pytest.raises(ValueError):
        HashingEmbedder(0)


def test_words_fold_case_and_accents_like_the_fts5_index():
    assert words("Café RÉSUMÉ, naïve_user 42!") == ["cafe", "resume", "naive", "user", "42"]


@pytest.mark.slow
def test_minilm_embeds_meaning_offline():
    embedder = MiniLMEmbedder()
    assert embedder.dims == 384 and embedder._model is None  # nothing loaded before the first embed
    docs = embedder.embed_documents(
        ["The ship sailed across the sea for months, far from any harbour.", "She chopped onions and stirred the soup."]
    )
    query = embedder.embed_query("ocean voyage")
    assert docs.dtype == np.float32 and docs.shape == (2, 384) and query.shape == (384,)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    sailing, cooking = docs @ query
    assert sailing > cooking + 0.2  # no word in common with either: the difference is meaning


class _FakeLiteLLM(types.ModuleType):
    """Stands in for litellm.embedding: records calls, returns vectors of `dims` (unnormalised)."""

    def __init__(self, dims: int, fail: bool = False):
        super().__init__("litellm")
        self.dims, self.fail, self.calls = dims, fail, []

    def embedding(self, model, input, **kwargs):
        self.calls.append({"model": model, "input": list(input), **kwargs})
        if self.fail:
            raise RuntimeError("401 Unauthorized")
        rows = [
            {"index": i, "embedding": [float(len(text)) + j for j in range(self.dims)]} for i, text in enumerate(input)
        ]
        return types.SimpleNamespace(data=list(reversed(rows)))  # out of order on purpose: sorted by index


def test_litellm_embedder_takes_dims_from_the_first_call_and_routes_kwargs(monkeypatch):
    fake = _FakeLiteLLM(dims=6)
    monkeypatch.setitem(sys.modules, "litellm", fake)
    embedder = LiteLLMEmbedder(
        "cohere/embed-english-v3.0", batch_size=2, api_key="sk-secret",
        query_kwargs={"input_type": "search_query"}, document_kwargs={"input_type": "search_document"},
    )
    assert embedder.name == "litellm:cohere/embed-english-v3.0"
    docs = embedder.embed_documents(["a", "bb", "ccc"])
    assert embedder.dims == 6 and docs.shape == (3, 6) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-6)
    expected = np.arange(6, dtype=np.float32) + 2  # the row for "bb", normalised: the order survived
    np.testing.assert_allclose(docs[1], expected / np.linalg.norm(expected), rtol=1e-6)
    assert [c["input"] for c in fake.calls] == [["a", "bb"], ["ccc"]]  # batches of 2
    assert all(c["input_type"] == "search_document" for c in fake.calls)
    embedder.embed_query("q")
    assert fake.calls[-1]["input_type"] == "search_query" and fake.calls[-1]["api_key"] == "sk-secret"
    assert "sk-secret" not in repr(embedder)


def test_litellm_embedder_checks_given_dims_and_wraps_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "litellm", _FakeLiteLLM(dims=5))
    with pytest.raises(ModelError, match="expected 8 dims, got 5"):
        LiteLLMEmbedder("openai/text-embedding-3-small", dims=8).embed_query("q")
    monkeypatch.setitem(sys.modules, "litellm", _FakeLiteLLM(dims=5, fail=True))
    with pytest.raises(ModelError, match="openai/text-embedding-3-small") as error:
        LiteLLMEmbedder("openai/text-embedding-3-small", api_key="sk-secret").embed_query("q")
    assert "sk-secret" not in str(error.value)


def test_one_embedder_rule_keyed_on_stand_in_for_the_library_and_the_chat(tmp_path):
    from longread.backends.cache import CachedModel
    from longread.cli.run import chat_session
    from longread.memory.embedders import embedder_for
    from longread.testing import MockModel

    assert chat_session.embedder_for is embedder_for  # the chat's memory file and the library's chunks agree
    assert isinstance(embedder_for(MockModel(name="renamed")), HashingEmbedder)  # the flag decides, not the name
    assert isinstance(embedder_for(CachedModel(MockModel(), tmp_path / "c.sqlite")), HashingEmbedder)  # passed through
    assert isinstance(embedder_for(types.SimpleNamespace(name="mock-like")), MiniLMEmbedder)  # a real model: no flag
