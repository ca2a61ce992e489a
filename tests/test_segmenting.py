"""Segmentation invariants: no segment over budget, exact spans, full coverage, monotone order."""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longread.segmenting import MIN_BUDGET, segment_text
from longread.tokenizers import tiktoken_tokenizer

from .conftest import shared_file

TIKTOKEN = tiktoken_tokenizer("o200k_base")


def non_whitespace(text: str) -> str:
    return "".join(text.split())


def check_invariants(text, segments, tokenizer, budget):
    assert [s.index for s in segments] == list(range(len(segments)))
    previous_end = 0
    for segment in segments:
        assert segment.text == text[segment.start : segment.end]
        assert segment.start >= previous_end and segment.end > segment.start
        assert text[previous_end : segment.start].strip() == ""  # only whitespace between segments
        assert tokenizer.count(segment.text) == segment.tokens <= budget
        previous_end = segment.end
    assert text[previous_end:].strip() == ""
    assert non_whitespace("".join(s.text for s in segments)) == non_whitespace(text)


@lru_cache(maxsize=1)
def smollm_tokenizer():
    from transformers import AutoTokenizer

    from longread.backends.local.weights import embedded_model_dir
    from longread.tokenizers import HFTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(embedded_model_dir()), "smollm2")


unicode_words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)
separators = st.sampled_from([" ", " ", "  ", "\n", "\n\n", "\n \n\n", ". ", "! ", "? ", ".\n", "\t", "\u3000", "。"])


@st.composite
def documents(draw):
    parts = draw(st.lists(st.tuples(unicode_words, separators), min_size=0, max_size=80))
    return "".join(w + s for w, s in parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=documents(), budget=st.integers(min_value=MIN_BUDGET, max_value=300))
def test_invariants_on_random_unicode_with_tiktoken(text, budget):
    check_invariants(text, segment_text(text, TIKTOKEN, budget), TIKTOKEN, budget)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=documents(), budget=st.integers(min_value=MIN_BUDGET, max_value=200))
def test_invariants_on_random_unicode_with_the_local_models_tokenizer(text, budget):
    tokenizer = smollm_tokenizer()
    check_invariants(text, segment_text(text, tokenizer, budget), tokenizer, budget)


@settings(max_examples=30, deadline=None)
@given(
    word=st.text(alphabet=st.sampled_from("abcdefghij😀漢字"), min_size=1, max_size=5),
    repeats=st.integers(min_value=50, max_value=400),
    budget=st.integers(min_value=MIN_BUDGET, max_value=64),
)
def test_one_long_run_without_spaces_falls_back_to_token_cuts(word, repeats, budget):
    text = word * repeats
    segments = segment_text(text, TIKTOKEN, budget)
    check_invariants(text, segments, TIKTOKEN, budget)


def test_paragraphs_that_fit_travel_together_and_paragraph_breaks_win_over_sentences():
    first = "The keeper climbed the stairs. She lit the lamp."
    second = "A ship passed the rocks. Nobody saw it."
    third = "Morning came. " * 30
    text = f"{first}\n\n{second}\n\n{third.strip()}"
    budget = TIKTOKEN.count(f"{first}\n\n{second}") + 2
    segments = segment_text(text, TIKTOKEN, budget)
    assert segments[0].text == f"{first}\n\n{second}"  # both short paragraphs, nothing of the third
    # the long third paragraph is split on sentence boundaries
    assert all(s.text.endswith("Morning came.") for s in segments[1:])


def test_overlong_sentence_is_cut_and_nothing_is_lost():
    sentence = "word " * 500
    segments = segment_text(sentence, TIKTOKEN, 50)
    assert len(segments) >= 10
    check_invariants(sentence, segments, TIKTOKEN, 50)
    assert all(not s.text.startswith(" ") and not s.text.endswith(" ") for s in segments)


def test_empty_and_whitespace_text_have_no_segments():
    assert segment_text("", TIKTOKEN, 100) == []
    assert segment_text(" \n\n \t", TIKTOKEN, 100) == []


def test_budget_below_minimum_is_refused():
    with pytest.raises(ValueError, match="at least"):
        segment_text("text", TIKTOKEN, MIN_BUDGET - 1)


@pytest.mark.parametrize("book", ["anne_of_green_gables_part.txt", "murders_in_the_rue_morgue.txt"])
@pytest.mark.parametrize("budget", [512, 3000])
def test_invariants_on_shared_books(book, budget):
    text = shared_file(f"books/{book}").read_text(encoding="utf-8")
    segments = segment_text(text, TIKTOKEN, budget)
    check_invariants(text, segments, TIKTOKEN, budget)
    # Packing is tight: on average segments are at least 80% full.
    assert sum(s.tokens for s in segments[:-1]) >= 0.8 * budget * (len(segments) - 1)


def test_invariants_on_a_shared_book_with_the_local_tokenizer():
    text = shared_file("books/anne_of_green_gables_part.txt").read_text(encoding="utf-8")
    tokenizer = smollm_tokenizer()
    check_invariants(text, segment_text(text, tokenizer, 1000), tokenizer, 1000)
