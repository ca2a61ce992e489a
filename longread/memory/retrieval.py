"""Ranking archived memory: score = w_recency * recency + w_relevance * relevance + w_keyword * keyword.

SCM (Wang et al., arXiv:2304.13343, memory retrieval) ranks memory by recency plus relevance, as Generative
Agents (Park et al., UIST 2023) do; we add a keyword part for exact terms (names, numbers) that embeddings blur.
Each part lies in [0, 1], so a weight of 1 gives each the same reach.

- **relevance**: cosine of the query and item embeddings, negatives clipped to 0 (one float32 matrix-vector
  product over the session). Raw, not min-max normalised over the session as Park et al. do: in a small session
  min-max turns a hair's difference into the full range, and the absolute cosine is what says "unrelated".
- **recency**: exponential decay over the item's *position*: decay ** (items written after it). Position, not
  wall-clock age: a reader writes hundreds of notes within minutes, which time cannot tell apart, and a session
  resumed a week later should find its memory as it left it. Park et al. decay by 0.995 per hour; we use 0.995 per
  item: the last ~140 items keep more than half their recency, and a step of one item is worth 0.005 of cosine.
- **keyword**: BM25 (Robertson & Zaragoza, 2009; k1 = 1.2, b = 0.75) of the query's words in each candidate,
  divided by the best candidate's. IDF comes from the stream's per-session document frequencies.

Two stages keep a query fast at 100k items: the dense score picks `candidates` items (argpartition, no sort of the
whole session), the FTS5 index adds the latest items containing the query's rare words (in at most `rare_share`
of the items: the exact-term matches a dense model may miss), and only that small set is scored with BM25.
With `weights.keyword = 0` the result is exactly the top-k of recency + relevance over the whole session.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Collection, Sequence

import numpy as np

from .embedders import fold, words
from .store import MemoryItem, MemoryStream


@dataclass(frozen=True)
class Weights:
    recency: float = 1.0
    relevance: float = 1.0
    keyword: float = 0.5


@dataclass(frozen=True)
class RetrievalConfig:
    weights: Weights = field(default_factory=Weights)
    recency_decay: float = 0.995  # per item written after this one
    candidates: int = 32  # dense candidates that the keyword part re-scores (k = 5: six times over)
    keyword_hits: int = 16  # items the FTS5 index adds for the query's rare words
    rare_share: float = 0.05  # a word in at most this share of the session's items is rare
    bm25_k1: float = 1.2
    bm25_b: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.recency_decay <= 1.0:
            raise ValueError(f"recency_decay must be in (0, 1], got {self.recency_decay}")


@dataclass(frozen=True)
class Scored:
    """An item with its score and the three parts of it (each in [0, 1], before weighting)."""

    item: MemoryItem
    score: float
    relevance: float
    recency: float
    keyword: float


@lru_cache(maxsize=8)
def recency_scores(n: int, decay: float) -> np.ndarray:
    """decay ** (items written after each one): 1 for the latest item, decay for the one before, and so on.

    Cached (read-only): between two writes every query of a session needs the same vector.
    """
    scores = np.power(np.float32(decay), np.arange(n - 1, -1, -1, dtype=np.float32))
    scores.flags.writeable = False
    return scores


def bm25(
    query_terms: list[str], texts: list[str], document_frequency: dict[str, int], n_items: int,
    average_length: float, lengths: Sequence[int] | None = None, k1: float = 1.2, b: float = 0.75,
) -> np.ndarray:
    """BM25 of each text for the query terms; IDF is Lucene's ln(1 + (N - df + 0.5) / (df + 0.5)), never negative.

    `lengths` are the texts' word counts where known (the stream stores them); otherwise the texts are split.
    """
    idf = {
        term: math.log(1.0 + (n_items - df + 0.5) / (df + 0.5))
        for term, df in document_frequency.items()
        if term in query_terms
    }
    scores = np.zeros(len(texts), dtype=np.float64)
    if not idf:
        return scores
    # One regex finds only the query's words, far cheaper than splitting every candidate into all its words.
    # \b matches where the index splits once "_" (a word character to re, a separator to unicode61) is a space.
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(idf, key=len, reverse=True))) + r")\b")
    average_length = max(average_length, 1e-9)
    for i, text in enumerate(texts):
        frequency = Counter(pattern.findall(fold(text).replace("_", " ")))
        if not frequency:
            continue
        length = lengths[i] if lengths is not None else len(words(text))
        norm = k1 * (1.0 - b + b * length / average_length)
        scores[i] = sum(idf[t] * f * (k1 + 1.0) / (f + norm) for t, f in frequency.items())
    return scores


# Below this many matrix entries (about 20k items of 384 dims) numpy's single-threaded einsum beats BLAS: the BLAS
# threads sleep between queries and, on a busy 2-core machine, take milliseconds to wake (an A/B on the 2-core dev
# machine, query for query: 10k items, p50 1.5 ms with einsum, 5-10 ms with BLAS; 100k items, BLAS 20-30% faster).
_BLAS_FROM = 8_000_000


def cosines(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """matrix @ query (rows and query are unit vectors), by the faster route for the matrix's size."""
    query = np.asarray(query, dtype=matrix.dtype)
    if matrix.size < _BLAS_FROM:
        return np.einsum("ij,j->i", matrix, query)
    return matrix @ query


def _positions(ids: np.ndarray, wanted: list[int]) -> np.ndarray:
    """Positions in the sorted array ids of those wanted ids it holds."""
    wanted_array = np.asarray(wanted, dtype=np.int64)
    positions = np.searchsorted(ids, wanted_array)
    inside = positions < len(ids)
    positions, wanted_array = positions[inside], wanted_array[inside]
    return positions[ids[positions] == wanted_array]


def rank(
    stream: MemoryStream,
    session: str,
    query: str,
    *,
    k: int = 5,
    config: RetrievalConfig | None = None,
    exclude: Collection[int] = (),
) -> list[Scored]:
    """The session's k best items for the query, best first (ties go to the more recent item)."""
    config = config or RetrievalConfig()
    weights = config.weights
    index = stream.vectors(session)
    n = index.n
    if n == 0 or k <= 0:
        return []
    ids = index.ids
    relevance = cosines(index.matrix, stream.embedder.embed_query(query))
    np.maximum(relevance, 0.0, out=relevance)
    recency = recency_scores(n, config.recency_decay)
    base = relevance * np.float32(weights.relevance)
    base += recency * np.float32(weights.recency)
    if exclude:
        base[_positions(ids, list(exclude))] = -np.inf
    size = min(n, max(config.candidates, k))
    candidates = np.argpartition(-base, size - 1)[:size] if size < n else np.arange(n)
    candidates = candidates[np.isfinite(base[candidates])]
    keyword = np.zeros(len(candidates), dtype=np.float32)

    if weights.keyword > 0:
        terms = list(dict.fromkeys(words(query)))
        frequency = stream.term_frequencies(session, terms)
        if frequency:
            rare = [t for t in terms if 0 < frequency.get(t, 0) <= max(1.0, config.rare_share * n)]
            hits = _positions(ids, stream.keyword_matches(session, rare, config.keyword_hits))
            candidates = np.union1d(candidates, hits[np.isfinite(base[hits])])
            texts = stream.texts(ids[candidates].tolist())
            raw = bm25(
                terms, [texts.get(int(i), "") for i in ids[candidates]], frequency, n,
                float(index.word_counts.mean()), index.word_counts[candidates].tolist(), config.bm25_k1, config.bm25_b,
            )
            best = float(raw.max()) if raw.size else 0.0
            keyword = (raw / best if best > 0 else raw).astype(np.float32)

    score = base[candidates] + weights.keyword * keyword
    order = np.lexsort((-candidates, -score))[:k]  # by score, then the later position
    chosen = candidates[order]
    items = {item.id: item for item in stream.get_many(ids[chosen].tolist())}
    return [
        Scored(items[int(ids[p])], float(score[o]), float(relevance[p]), float(recency[p]), float(keyword[o]))
        for o, p in zip(order, chosen)
        if int(ids[p]) in items
    ]
