"""Token counting behind one small interface: tiktoken for API models, the model's own tokenizer for local ones."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from . import _env  # noqa: F401  (points tiktoken at the encodings litellm ships)

DEFAULT_ENCODING = "o200k_base"

# The encodings available offline are the three litellm ships; map model families onto them.
_ENCODING_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada", "cl100k_base"),
    ("text-davinci", "p50k_base"),
    ("code-davinci", "p50k_base"),
)


@runtime_checkable
class Tokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def count(self, text: str) -> int: ...


class TiktokenTokenizer:
    """A tiktoken encoding. Used for API models, whose own tokenizers are not available offline."""

    def __init__(self, encoding: str = DEFAULT_ENCODING):
        import tiktoken

        self.name = encoding
        self._enc = tiktoken.get_encoding(encoding)

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, disallowed_special=())

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(list(ids))

    def count(self, text: str) -> int:
        return len(self._enc.encode(text, disallowed_special=()))

    @property
    def pattern(self) -> str:
        """The encoding's pre-tokenizer regex (segmenting relies on where it always splits)."""
        return self._enc._pat_str

    @cached_property
    def _token_bytes(self) -> np.ndarray:
        """Byte length of every token id (0 for unused ids), to map token ids to offsets without decoding."""
        lengths = np.zeros(self._enc.n_vocab, dtype=np.int64)
        ranks = getattr(self._enc, "_mergeable_ranks", None)
        if isinstance(ranks, dict):  # 20 ms instead of 150 ms; special tokens never occur in ordinary encoding
            ids = np.fromiter(ranks.values(), np.int64, len(ranks))
            lengths[ids] = np.fromiter(map(len, ranks), np.int64, len(ranks))
            return lengths
        for token in range(self._enc.n_vocab):
            try:
                lengths[token] = len(self._enc.decode_single_token_bytes(token))
            except KeyError:
                pass
        return lengths

    def token_starts(self, text: str, threads: int | None = None) -> np.ndarray:
        """Char offset where each token of `text` starts, from one encoding of the text.

        A long text is encoded in parallel pieces, cut where o200k_base and cl100k_base always split (see
        `_split_near`), so the tokens are the whole text's. Offsets come from a table of token byte lengths.
        """
        # Two threads on a two-core machine shared with other work lose more to contention than they win.
        threads = threads or (min(os.cpu_count() or 1, 4) if (os.cpu_count() or 1) >= 4 else 1)
        pieces = _split_near(text, max(1, min(threads, len(text) // 200_000)))
        if len(pieces) > 1:
            with ThreadPoolExecutor(len(pieces)) as pool:
                ids = list(pool.map(self._encode_numpy, pieces))
        else:
            ids = [self._encode_numpy(text)]
        starts, char_base = [], 0
        for piece, piece_ids in zip(pieces, ids):
            if len(piece_ids):
                byte_starts = np.cumsum(self._token_bytes[piece_ids])
                byte_starts[1:] = byte_starts[:-1]
                byte_starts[0] = 0
                raw = np.frombuffer(piece.encode("utf-8", "surrogatepass"), dtype=np.uint8)
                if len(raw) != len(piece):  # not ASCII: map bytes to chars (continuation bytes to their char)
                    char_at_byte = np.cumsum((raw & 0xC0) != 0x80) - 1
                    byte_starts = char_at_byte[np.minimum(byte_starts, len(raw) - 1)]
                starts.append(byte_starts + char_base)
            char_base += len(piece)
        return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)

    def _encode_numpy(self, text: str) -> np.ndarray:
        try:
            return self._enc.encode_to_numpy(text, disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: replace them as `encode` does (same length in chars)
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._enc.encode_to_numpy(text, disallowed_special=())


class HFTokenizer:
    """A Hugging Face tokenizer, for local models: counts are exact for the model that runs."""

    def __init__(self, tokenizer: Any, name: str | None = None):
        self._tok = tokenizer
        self.name = name or getattr(tokenizer, "name_or_path", "hf")

    @property
    def hf(self) -> Any:
        return self._tok

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self._tok(texts, add_special_tokens=False)["input_ids"]]

    def token_starts(self, text: str) -> np.ndarray:
        """Char offset where each token of `text` starts (the fast tokenizer's offset mapping)."""
        encoded = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return np.asarray([start for start, _ in encoded["offset_mapping"]], dtype=np.int64)


def _split_near(text: str, parts: int) -> list[str]:
    """text in `parts` pieces of similar size, each cut right after a line break that a visible character other
    than "/" follows: o200k_base and cl100k_base always split there, so the pieces' ids are the whole text's."""
    if parts <= 1:
        return [text]
    pieces, start = [], 0
    for k in range(1, parts):
        found = _STABLE_CUT.search(text, max(start, len(text) * k // parts))
        if found is None:
            break
        pieces.append(text[start : found.end()])
        start = found.end()
    pieces.append(text[start:])
    return pieces


_STABLE_CUT = re.compile(r"\n(?=[^\s/])")


def encoding_for_model(model: str) -> str:
    """The tiktoken encoding to count a litellm model string with; o200k_base when unknown."""
    name = model.rsplit("/", 1)[-1].lower()
    for prefix, encoding in _ENCODING_BY_PREFIX:
        if name.startswith(prefix):
            return encoding
    return DEFAULT_ENCODING


@lru_cache(maxsize=8)
def tiktoken_tokenizer(encoding: str = DEFAULT_ENCODING) -> TiktokenTokenizer:
    return TiktokenTokenizer(encoding)


def tokenizer_for_api_model(model: str) -> TiktokenTokenizer:
    return tiktoken_tokenizer(encoding_for_model(model))


def truncate_to_tokens(text: str, tokenizer: Tokenizer, limit: int) -> str:
    """text cut to at most `limit` tokens of tokenizer. Re-counted: decoding a prefix of the ids need not encode
    back to as many ids, so the cut steps back until the count fits."""
    if limit <= 0:
        return ""
    ids = tokenizer.encode(text)
    if len(ids) <= limit:
        return text
    cut = limit
    while cut > 0:
        candidate = tokenizer.decode(ids[:cut])
        if tokenizer.count(candidate) <= limit:
            return candidate
        cut -= 1
    return ""
