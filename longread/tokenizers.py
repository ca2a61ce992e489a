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

    @cached_property
    def _token_bytes(self) -> np.ndarray:
        """Byte length of every token id (0 for unused ids), to map token ids to offsets without decoding."""
        lengths = np.zeros(self._enc.n_vocab, dtype=np.int64)
        # tiktoken keeps the ranks its Encoding was made with (a private attribute, in every release from 0.1 to 0.14
        # at least; tests/test_tokenizers.py checks the table against the public per-token path): 20 ms instead of
        # 150 ms. Without it, the public path. Special tokens never occur in ordinary encoding.
        ranks = getattr(self._enc, "_mergeable_ranks", None)
        if isinstance(ranks, dict):
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


MAX_EXPORT_CHARS = 64 << 20  # a tokenizer.json of a 256k vocabulary is about 20 MB


class HFTokenizer:
    """A Hugging Face tokenizer, for local models: counts are exact for the model that runs.

    Text is data: a control token written in a document, a note or a user's message (`<|im_start|>`, any special
    token) is encoded as the characters it is made of, never as the token, so no text can open a turn of its own.
    Chats go through the tokenizer's own mechanism for that, `apply_chat_template(sanitize_control_tokens=True)`
    (transformers 5.20+): the only control tokens in a prompt are those the template wrote. Plain text (segments,
    counts, offsets) is encoded the way that mechanism encodes a message's text, so a segment counts as many tokens
    alone as inside a prompt."""

    def __init__(self, tokenizer: Any, name: str | None = None):
        self._tok = tokenizer
        self.name = name or getattr(tokenizer, "name_or_path", "hf")
        self._control = _control_tokens(tokenizer)
        self._control_re = (re.compile("(" + "|".join(map(re.escape, sorted(self._control, key=len, reverse=True)))
                                       + ")") if self._control else None)
        self._as_text: dict[str, list[int]] = {}

    @property
    def hf(self) -> Any:
        return self._tok

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, control in self._pieces(text):
            ids += self._control_as_text(piece) if control else self._tok.encode(piece, add_special_tokens=False)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._control_re is not None and any(self._control_re.search(t) for t in texts):
            return [self.encode(t) for t in texts]
        return [list(ids) for ids in self._tok(texts, add_special_tokens=False)["input_ids"]]

    def token_starts(self, text: str) -> np.ndarray:
        """Char offset where each token of `text` starts (the fast tokenizer's offset mapping)."""
        starts: list[int] = []
        at = 0
        for piece, control in self._pieces(text):
            if control:  # the characters of a control token: every token of it starts inside it
                ids = self._control_as_text(piece)
                starts += [at + min(i, len(piece) - 1) for i in range(len(ids))]
            else:
                encoded = self._tok(piece, add_special_tokens=False, return_offsets_mapping=True)
                starts += [at + start for start, _ in encoded["offset_mapping"]]
            at += len(piece)
        return np.asarray(starts, dtype=np.int64)

    def encode_chat(self, messages: Sequence[Any], cache_prefix: int | None = None) -> tuple[list[int], list[int]]:
        """(prefix ids, rest ids) of `messages` under the model's chat template, ready for a reply.

        With `cache_prefix`, the prompt is encoded in two pieces cut right after the first `cache_prefix`
        characters of the last message, so the prefix ids are the same for every prompt that shares that text
        (encoding it whole could merge tokens across the cut); without it, the prefix is empty."""
        messages = [dict(m) for m in messages]
        last = str(messages[-1].get("content") or "")
        cut = min(cache_prefix or 0, len(last))
        if cut > 0:
            rendered = self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            at = rendered.rfind(last)
            try:
                prefix = self._chat([*messages[:-1], {**messages[-1], "content": last[:cut]}],
                                    continue_final_message=True) if at >= 0 else None
            except ValueError:  # the template cannot end inside its last message
                prefix = None
            if prefix is not None:  # the rest: the message's text, then what the template writes after it
                template_tail = self._tok.encode(rendered[at + len(last):], add_special_tokens=False)
                return prefix, self.encode(last[cut:]) + template_tail
        return [], self._chat(messages, add_generation_prompt=True)

    # -- the same tokenizer elsewhere ------------------------------------------------------------------------------
    def export(self) -> dict[str, str]:
        """The tokenizer's files (tokenizer.json, its config, the chat template) as text, for `from_export`
        in another process: how `longread serve` lets its clients count exactly as it does."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="longread-tokenizer-") as folder:
            self._tok.save_pretrained(folder)
            return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(folder).iterdir()) if p.is_file()}

    @classmethod
    def from_export(cls, files: dict[str, str], name: str) -> "HFTokenizer":
        """The tokenizer `export` wrote (ValueError for files that cannot be one). The names must be plain file
        names and the whole under MAX_EXPORT_CHARS: they come from a server."""
        import tempfile
        from pathlib import Path

        from transformers import AutoTokenizer

        if not isinstance(files, dict) or not files or sum(len(str(v)) for v in files.values()) > MAX_EXPORT_CHARS:
            raise ValueError("not a tokenizer export (no files, or too large)")
        with tempfile.TemporaryDirectory(prefix="longread-tokenizer-") as folder:
            for file_name, text in files.items():
                if not isinstance(text, str) or not re.fullmatch(r"[\w][\w.-]{0,100}", str(file_name)):
                    raise ValueError(f"not a tokenizer file: {str(file_name)[:40]!r}")
                (Path(folder) / file_name).write_text(text, encoding="utf-8")
            try:
                return cls(AutoTokenizer.from_pretrained(folder, local_files_only=True), name)
            except Exception as exc:  # noqa: BLE001 - whatever transformers says of bad files
                raise ValueError(f"not a tokenizer export ({type(exc).__name__}: {exc})") from exc

    # -- control tokens as text -----------------------------------------------------------------------------------
    def _chat(self, messages: list[dict[str, Any]], **options: Any) -> list[int]:
        ids = self._tok.apply_chat_template(messages, tokenize=True, sanitize_control_tokens=True,
                                            return_dict=False, **options)
        return list(ids)

    def _pieces(self, text: str) -> list[tuple[str, bool]]:
        """text cut around each control token in it: (piece, is a control token), in order."""
        if self._control_re is None or not self._control_re.search(text):
            return [(text, False)] if text else []
        parts = self._control_re.split(text)
        return [(part, i % 2 == 1) for i, part in enumerate(parts) if part]

    def _control_as_text(self, token: str) -> list[int]:
        """A control token's characters as ordinary tokens, as `sanitize_control_tokens` encodes a marked one:
        the backend's normalizer, pre-tokenizer and model without its added tokens, after a newline (so that a
        SentencePiece tokenizer adds no prefix space), the newline's ids removed. Written by hand because
        transformers does this only inside apply_chat_template; read-only on the tokenizer, so safe in threads."""
        found = self._as_text.get(token)
        if found is None:
            newline = self._plain("\n")
            ids = self._plain("\n" + token)
            found = ids[len(newline):] if ids[: len(newline)] == newline else ids
            self._as_text[token] = found
        return found

    def _plain(self, text: str) -> list[int]:
        backend = getattr(self._tok, "backend_tokenizer", None)
        if backend is None:  # a Python tokenizer: split_special_tokens is an argument there, not shared state
            return list(self._tok.encode(text, add_special_tokens=False, split_special_tokens=True))
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        splits = [split for split, _ in backend.pre_tokenizer.pre_tokenize_str(text)] if backend.pre_tokenizer \
            else [text]
        return [token.id for split in splits for token in backend.model.tokenize(split)]


def _control_tokens(tokenizer: Any) -> frozenset[str]:
    """The tokens that a chat's text may not produce: the special tokens, and the other added tokens that its
    chat template writes (sanitize_control_tokens' own choice, when the tokenizer names none itself)."""
    added = list(getattr(tokenizer, "added_tokens_decoder", {}).values())
    named = getattr(tokenizer, "chat_control_tokens", None)
    template = getattr(tokenizer, "chat_template", None) or ""
    template = template if isinstance(template, str) else " ".join(map(str, dict(template).values()))
    chosen = set()
    for token in added:
        content = str(getattr(token, "content", token))
        if getattr(token, "special", False) or (named is not None and content in named) or (
                named is None and content in template and not content.isspace()):
            chosen.add(content)
    return frozenset(c for c in chosen if c)


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
