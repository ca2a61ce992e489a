"""Ranking: recency against relevance, the keyword part, exactness of the two-stage search, BM25."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longread.memory import HashingEmbedder, MemoryStream, RetrievalConfig, Weights, bm25, rank, recency_scores, words

FILLER = [
    "The crew mended the sails while the wind dropped.",
    "Bread and salted pork were served below deck.",
    "A storm gathered over the grey water at dusk.",
    "The captain paced the quarter-deck all night.",
    "Letters from home were read aloud in the forecastle.",
    "The carpenter built a coffin from spare planks.",
]


class SameVector:
    """An embedder that cannot tell texts apart: relevance ties everywhere, so only recency and keywords rank."""

    name = "same-vector"
    dims = 4

    def embed_query(self, text):
        return np.array([1, 0, 0, 0], dtype=np.float32)

    def embed_documents(self, texts):
        return np.tile(np.array([1, 0, 0, 0], dtype=np.float32), (len(texts), 1))


@pytest.fixture
def stream(tmp_path):
    with MemoryStream(tmp_path / "m.sqlite", embedder=HashingEmbedder(256)) as s:
        yield s


def test_recency_weight_moves_recent_items_up_and_relevance_weight_moves_relevant_ones_up(stream):
    relevant = stream.add("s", "note", "Ahab swore to hunt the white whale to the ends of the earth.")
    stream.add_many("s", "note", FILLER * 3)
    newest = stream.add("s", "note", "Dinner was late again tonight.")
    query = "Why does Ahab hunt the white whale?"

    only_relevance = rank(stream, "s", query, k=20, config=RetrievalConfig(Weights(recency=0, relevance=1, keyword=0)))
    only_recency = rank(stream, "s", query, k=20, config=RetrievalConfig(Weights(recency=1, relevance=0, keyword=0)))
    assert only_relevance[0].item == relevant
    assert only_recency[0].item == newest
    assert [s.item.id for s in only_recency] == sorted((s.item.id for s in only_recency), reverse=True)

    def place(item, recency_weight):
        config = RetrievalConfig(Weights(recency=recency_weight, relevance=1, keyword=0), recency_decay=0.9)
        return [s.item.id for s in rank(stream, "s", query, k=20, config=config)].index(item.id)

    weights = [0.0, 0.25, 0.5, 1, 2, 4, 8, 100]
    relevant_places = [place(relevant, w) for w in weights]
    newest_places = [place(newest, w) for w in weights]
    # More weight on recency never lifts the old relevant item, never sinks the newest one, and does flip them.
    assert relevant_places == sorted(relevant_places) and relevant_places[0] == 0 and relevant_places[-1] > 0
    assert newest_places == sorted(newest_places, reverse=True) and newest_places[-1] == 0


def test_keyword_part_lifts_exact_term_matches(tmp_path):
    with MemoryStream(tmp_path / "m.sqlite", embedder=SameVector()) as stream:
        named = stream.add("s", "note", "Queequeg carried his harpoon everywhere.")
        stream.add_many("s", "note", FILLER * 20)  # 120 newer items, no shared rare word
        query = "What did Queequeg carry?"
        plain = rank(stream, "s", query, k=5, config=RetrievalConfig(Weights(1, 1, 0)))
        assert named.id not in [s.item.id for s in plain]  # recency alone buries it
        # candidates=8: the named item is not among the dense candidates; the FTS5 pass for rare words finds it.
        boosted = rank(stream, "s", query, k=5, config=RetrievalConfig(Weights(1, 1, 1), candidates=8))
        assert boosted[0].item == named
        assert boosted[0].keyword == 1.0 and all(s.keyword == 0.0 for s in boosted[1:])


def test_components_are_in_range_and_scores_are_their_weighted_sum(stream):
    stream.add_many("s", "note", FILLER + ["The white whale breached beside the boat."])
    weights = Weights(recency=0.7, relevance=1.3, keyword=0.4)
    for scored in rank(stream, "s", "white whale boat", k=7, config=RetrievalConfig(weights)):
        for part in (scored.relevance, scored.recency, scored.keyword):
            assert 0.0 <= part <= 1.0
        expected = 0.7 * scored.recency + 1.3 * scored.relevance + 0.4 * scored.keyword
        assert scored.score == pytest.approx(expected, abs=1e-5)


def test_ties_go_to_the_more_recent_item(tmp_path):
    with MemoryStream(tmp_path / "m.sqlite", embedder=SameVector()) as stream:
        items = stream.add_many("s", "note", ["same words"] * 4)
        ranked = rank(stream, "s", "same", k=4, config=RetrievalConfig(Weights(recency=0, relevance=1, keyword=1)))
        assert [s.item.id for s in ranked] == [i.id for i in reversed(items)]


def test_exclude_and_empty_sessions(stream):
    assert rank(stream, "empty", "anything") == []
    items = stream.add_many("s", "note", FILLER)
    ranked = rank(stream, "s", "storm water", k=10, exclude=[items[2].id])
    assert items[2].id not in [s.item.id for s in ranked] and len(ranked) == len(FILLER) - 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.sampled_from(FILLER + ["white whale", "whale oil", "harpoon", "sea"]), min_size=1, max_size=40),
    recency=st.floats(0, 3),
    relevance=st.floats(0, 3),
    decay=st.floats(0.5, 1.0),
    k=st.integers(1, 8),
    candidates=st.integers(1, 10),
)
def test_two_stage_search_equals_scoring_every_item(tmp_path_factory, texts, recency, relevance, decay, k, candidates):
    """With no keyword part the candidate stage is exact: the same top k as scoring all items by the formula."""
    embedder = HashingEmbedder(32)
    with MemoryStream(tmp_path_factory.mktemp("m") / "m.sqlite", embedder=embedder) as stream:
        stream.add_many("s", "note", texts)
        config = RetrievalConfig(Weights(recency, relevance, 0.0), recency_decay=decay, candidates=candidates)
        got = rank(stream, "s", "the white whale at sea", k=k, config=config)
        cosine = np.maximum(embedder.embed_documents(texts) @ embedder.embed_query("the white whale at sea"), 0)
        ages = np.arange(len(texts))[::-1]
        expected = relevance * cosine + recency * decay**ages.astype(np.float64)
        best = sorted(range(len(texts)), key=lambda i: (-round(expected[i], 4), -i))[:k]
        # float32 scores against float64 ones: equal to 1e-4 (rounding both can split a tie like 0.11875)
        np.testing.assert_allclose([s.score for s in got], [expected[i] for i in best], atol=1e-4)


def test_recency_is_exponential_in_position():
    scores = recency_scores(4, 0.5)
    np.testing.assert_allclose(scores, [0.125, 0.25, 0.5, 1.0])


def test_bm25_prefers_rare_terms_and_short_documents():
    frequency = {"whale": 90, "queequeg": 2}
    rare, common = bm25(["queequeg", "whale"], ["queequeg slept", "whale slept"], frequency, 100, 2.0)
    assert rare > common > 0
    short, long = bm25(["whale"], ["whale", "whale " + "word " * 20], {"whale": 5}, 100, 5.0)
    assert short > long > 0
    assert bm25(["absent"], ["whale"], {}, 100, 1.0).tolist() == [0.0]


@settings(max_examples=50, deadline=None)
@given(
    texts=st.lists(
        st.lists(
            st.sampled_from(["whale", "whales", "Whale,", "whaleboat", "café", "CAFE", "oil", "sea_oil", "42", "—"]),
            max_size=12,
        ).map(" ".join),
        min_size=1, max_size=6,
    ),
    query=st.lists(st.sampled_from(["whale", "cafe", "oil", "42", "sea"]), min_size=1, max_size=3),
)
def test_bm25_counts_whole_words_as_the_index_splits_them(texts, query):
    """The one-regex term count agrees with splitting every text into words (folded, whole words only)."""
    split = [words(t) for t in texts]
    frequency = {term: max(1, sum(term in ws for ws in split)) for term in query}
    average = sum(len(ws) for ws in split) / len(split) or 1.0
    got = bm25(query, texts, frequency, 50, average)
    for i, ws in enumerate(split):
        counts = Counter(ws)
        norm = 1.2 * (1 - 0.75 + 0.75 * len(ws) / max(average, 1e-9))
        expected = sum(
            math.log(1 + (50 - df + 0.5) / (df + 0.5)) * counts[t] * 2.2 / (counts[t] + norm)
            for t, df in frequency.items() if counts[t]
        )
        assert got[i] == pytest.approx(expected)
