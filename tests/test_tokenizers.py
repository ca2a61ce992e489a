"""The tokenizer interface: tiktoken offline for API models, the model's own tokenizer for local ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longread.tokenizers import (
    HFTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    _split_near,
    encoding_for_model,
    tiktoken_tokenizer,
    tokenizer_for_api_model,
)

from .conftest import shared_file

unicode_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
# Texts with many line breaks, "/" and punctuation, where the parallel pieces of `token_starts` are cut.
lined_text = st.lists(
    st.sampled_from(["word", " word", "Word", ".", "!”", "/", "\n", "\n\n", " \n", "\t", "12", "漢字", "😀", " "]),
    max_size=80,
).map("".join)


@pytest.fixture(scope="module")
def smollm() -> HFTokenizer:
    from transformers import AutoTokenizer

    from longread.backends.local.weights import embedded_model_dir

    return HFTokenizer(AutoTokenizer.from_pretrained(embedded_model_dir()))


@pytest.mark.parametrize(
    "model, encoding",
    [
        ("gpt-4o", "o200k_base"),
        ("openai/gpt-4o-mini", "o200k_base"),
        ("azure/gpt-4.1-nano", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("openai/gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-davinci-003", "p50k_base"),
        ("anthropic/claude-3-5-sonnet", "o200k_base"),  # unknown: the default
        ("ollama/llama3.1", "o200k_base"),
    ],
)
def test_model_to_encoding(model, encoding):
    assert encoding_for_model(model) == encoding
    assert tokenizer_for_api_model(model).name == encoding


def test_encodings_load_offline_from_the_files_litellm_ships():
    cache = Path(os.environ["TIKTOKEN_CACHE_DIR"])
    assert cache.is_dir() and "litellm" in cache.parts
    # A fresh process with no network route: loading must not try to download anything.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import os\n"
        "from longread.tokenizers import TiktokenTokenizer\n"
        "print([TiktokenTokenizer(n).count('hello world') for n in ('o200k_base', 'cl100k_base', 'p50k_base')])\n"
        "print(os.environ['TIKTOKEN_CACHE_DIR'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}  # longread._env must set it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    counts, cache_dir = out.stdout.split("\n")[:2]
    assert counts == "[2, 2, 2]" and Path(cache_dir) == cache


@settings(max_examples=100, deadline=None)
@given(text=unicode_text, encoding=st.sampled_from(["o200k_base", "cl100k_base", "p50k_base"]))
def test_round_trip_and_count(text, encoding):
    tokenizer = tiktoken_tokenizer(encoding)
    assert isinstance(tokenizer, Tokenizer)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.count(text) == len(ids)
    assert tokenizer.encode_batch([text, text[:7]]) == [ids, tokenizer.encode(text[:7])]


def test_special_token_text_is_counted_as_plain_text():
    tokenizer = TiktokenTokenizer("o200k_base")
    assert tokenizer.count("<|endoftext|>") > 1
    assert tokenizer.decode(tokenizer.encode("<|endoftext|>")) == "<|endoftext|>"


@settings(max_examples=100, deadline=None)
@given(text=st.one_of(unicode_text, lined_text))
def test_token_starts_match_tiktokens_own_offsets(text):
    tokenizer = tiktoken_tokenizer("o200k_base")
    ids = tokenizer.encode(text)
    _, offsets = tokenizer._enc.decode_with_offsets(ids)
    assert tokenizer.token_starts(text).tolist() == offsets


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_the_token_length_table_is_the_one_tiktokens_public_api_gives(encoding):
    """The table token_starts reads is built from a private attribute of tiktoken when it has it: it must equal
    the one built token by token through the public API, on whatever tiktoken version is installed."""
    import tiktoken

    tokenizer, enc = TiktokenTokenizer(encoding), tiktoken.get_encoding(encoding)
    ordinary = len(enc.token_byte_values())  # the ranks are the ids 0..n-1; the special tokens come after them
    public = [len(piece) for piece in enc.decode_tokens_bytes(range(ordinary))]
    assert tokenizer._token_bytes.tolist()[:ordinary] == public
    assert not tokenizer._token_bytes[ordinary:].any()


@settings(max_examples=150, deadline=None)
@given(text=lined_text, parts=st.integers(2, 5), encoding=st.sampled_from(["o200k_base", "cl100k_base"]))
def test_parallel_pieces_encode_like_the_whole_text(text, parts, encoding):
    tokenizer = tiktoken_tokenizer(encoding)
    pieces = _split_near(text, parts)
    assert "".join(pieces) == text
    assert [t for piece in pieces for t in tokenizer.encode(piece)] == tokenizer.encode(text)


def test_token_starts_of_a_book_in_parallel_pieces():
    text = shared_file("books/sense_and_sensibility.txt").read_text(encoding="utf-8")
    tokenizer = tiktoken_tokenizer("o200k_base")
    starts = tokenizer.token_starts(text, threads=4)
    assert starts.tolist() == tokenizer.token_starts(text, threads=1).tolist()
    assert len(starts) == tokenizer.count(text)


def test_hf_tokenizer_wraps_the_embedded_models_tokenizer(smollm):
    assert isinstance(smollm, Tokenizer)
    text = "The keeper lit the lamp at dusk.\n\nIt turned all night, 12 345 times. 灯塔 😀"
    ids = smollm.encode(text)
    assert ids == smollm.hf(text, add_special_tokens=False)["input_ids"]  # no BOS/EOS added
    assert smollm.decode(ids) == text and smollm.count(text) == len(ids)
    assert smollm.encode_batch([text, "a"]) == [ids, smollm.encode("a")]
    starts = smollm.token_starts(text)
    assert len(starts) == len(ids) and starts[0] == 0 and list(starts) == sorted(starts)
    assert smollm.count(text) != tiktoken_tokenizer("o200k_base").count(text)  # its own vocabulary, not tiktoken's
