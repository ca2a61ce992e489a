"""Token counting behind one small interface: tiktoken for API models, the model's own tokenizer for local ones."""

from __future__ import annotations

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

    @cached_property
    def _token_bytes(self) -> np.ndarray:
        """Byte length of every token id (0 for unused ids), to map token ids to offsets without decoding."""
        lengths = np.zeros(self._enc.n_vocab, dtype=np.int64)
        for token in range(self._enc.n_vocab):
            try:
                lengths[token] = len(self._enc.decode_single_token_bytes(token))
            except KeyError:
                pass
        return lengths

    def token_starts(self, text: str, threads: int = 4) -> np.ndarray:
        """Char offset where each token of `text` starts (text encoded in a few big pieces in parallel).

        Used to estimate the count of any span in one pass over a book; pieces are cut at paragraph breaks,
        so the ids are those of encoding each piece, which can differ from the whole text's only at the cuts.
        """
        pieces = _split_near(text, max(1, min(threads, len(text) // 200_000)))
        ids = self._enc.encode_ordinary_batch(pieces, num_threads=len(pieces)) if len(pieces) > 1 else [
            self._enc.encode_ordinary(text)
        ]
        starts = []
        char_base = 0
        for piece, piece_ids in zip(pieces, ids):
            raw = np.frombuffer(piece.encode("utf-8", "surrogatepass"), dtype=np.uint8)
            char_at_byte = np.cumsum((raw & 0xC0) != 0x80) - 1  # continuation bytes map to their char
            byte_starts = np.concatenate(([0], np.cumsum(self._token_bytes[np.asarray(piece_ids, dtype=np.int64)])[:-1]))
            byte_starts = np.minimum(byte_starts, max(len(raw) - 1, 0))
            starts.append(char_at_byte[byte_starts] + char_base if len(raw) else np.zeros(0, dtype=np.int64))
            char_base += len(piece)
        return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


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
    """text in `parts` pieces of similar size, cut just after a paragraph break where there is one."""
    if parts <= 1:
        return [text]
    pieces, start = [], 0
    for k in range(1, parts):
        target = len(text) * k // parts
        cut = text.find("\n\n", target)
        if cut < 0 or cut <= start:
            continue
        pieces.append(text[start : cut + 2])
        start = cut + 2
    pieces.append(text[start:])
    return pieces


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
