"""Token counting behind one small interface: tiktoken for API models, the model's own tokenizer for local ones."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol, Sequence, runtime_checkable

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
