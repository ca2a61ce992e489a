"""Segmentation: no segment over budget, exact spans and counts, full coverage in order, paragraph-first packing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import longread.segmenting as segmenting
from longread.segmenting import segment_document, segment_text
from longread.tokenizers import HFTokenizer, tiktoken_tokenizer

from .conftest import shared_file

O200K = tiktoken_tokenizer("o200k_base")
CL100K = tiktoken_tokenizer("cl100k_base")
BOOKS = ["moby_dick.txt", "sense_and_sensibility.txt", "murders_in_the_rue_morgue.txt", "anne_of_green_gables_part.txt"]


@pytest.fixture(scope="module")
def smollm() -> HFTokenizer:
    """The embedded model's own tokenizer (a byte-level BPE with offsets but no checked pre-tokenizer)."""
    from transformers import AutoTokenizer

    from longread.backends.local.weights import embedded_model_dir

    return HFTokenizer(AutoTokenizer.from_pretrained(embedded_model_dir()), "smollm2")


def visible(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace())


def check_invariants(text, segments, tokenizer, budget):
    assert [s.index for s in segments] == list(range(len(segments)))
    previous_end = 0
    for segment in segments:
        assert segment.text == text[segment.start : segment.end]
        assert previous_end <= segment.start < segment.end
        assert visible(text[previous_end : segment.start]) == ""  # only whitespace between segments
        assert segment.text[0] == text[segment.start] and not segment.text[0].isspace()
        assert tokenizer.count(segment.text) == segment.tokens <= budget
        previous_end = segment.end
    assert visible(text[previous_end:]) == ""
    # every visible character once, in order (spans are monotone, so this is the whole of coverage)
    assert "".join(visible(s.text) for s in segments) == visible(text)


def segment_or_refuse(text, tokenizer, budget):
    """segment_text, where a ValueError is allowed only if some character alone takes more than the budget."""
    try:
        return segment_text(text, tokenizer, budget)
    except ValueError as error:
        assert "cannot hold the character" in str(error)
        assert max(tokenizer.count(ch) for ch in visible(text)) > budget
        return None


# -- random documents ----------------------------------------------------------------------------------------

any_unicode = st.text(
    st.characters(categories=("L", "M", "N", "P", "S", "Z", "Cc"), exclude_characters="\x00"), max_size=400
)
words = st.one_of(
    st.text(st.characters(categories=("L", "M", "N", "P", "S")), min_size=1, max_size=12),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABC"), min_size=1, max_size=10),
    st.text(st.sampled_from("漢字日本語中文的是了"), min_size=1, max_size=60),  # CJK, no spaces
    st.text(st.sampled_from("😀🐳🌊👩‍👩‍👧🏳️‍🌈"), min_size=1, max_size=8),
    st.text(st.sampled_from("xyz"), min_size=80, max_size=400),  # a long word without spaces
)
separators = st.sampled_from(
    [" ", " ", " ", "  ", "\n", "\n\n", "\n \n\n", "\r\n\r\n", ". ", "! ", "? ", ".\n", ".\n\n", "。", "」\n", ".” ",
     ".’\n\n", "\t", "\u3000", "\xa0", ", ", "\n— ", "\n“", "/\n", "\n/", "\x1c"]
)


@st.composite
def documents(draw) -> str:
    parts = draw(st.lists(st.tuples(words, separators), max_size=60))
    return draw(st.sampled_from(["", " ", "\n\n"])) + "".join(w + s for w, s in parts)


# Pieces that sit on the edges of the tiktoken pre-tokenizer patterns: punctuation + newlines (and "/", which
# o200k takes after newlines), contractions, digit runs, whitespace runs, tabs and separators Python calls space.
tricky_pieces = st.sampled_from(
    ["a", "Word", "é", "e\u0301", "漢", "😀", "1", "12345", "'s", "'", "’", ".", "!", "?", "”", "“", "/", "-", "—",
     " ", "  ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\x1c", "\u3000", "\xa0", "<|endoftext|>"]
)
tricky_texts = st.lists(tricky_pieces, min_size=1, max_size=60).map("".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(documents(), any_unicode), budget=st.integers(1, 300), tokenizer=st.sampled_from([O200K, CL100K]))
def test_invariants_on_random_documents_with_tiktoken(text, budget, tokenizer):
    segments = segment_or_refuse(text, tokenizer, budget)
    if segments is not None:
        check_invariants(text, segments, tokenizer, budget)


@settings(max_examples=150, deadline=None)
@given(text=tricky_texts, budget=st.integers(4, 12), tokenizer=st.sampled_from([O200K, CL100K]))
def test_counts_read_off_the_whole_text_encoding_are_exact_at_tokenizer_edge_cases(text, budget, tokenizer):
    # Small budgets make many cuts, most of them at places where the count is taken from the whole-text encoding.
    check_invariants(text, segment_text(text, tokenizer, budget), tokenizer, budget)


@settings(max_examples=200, deadline=None)
@given(text=tricky_texts, tokenizer=st.sampled_from([O200K, CL100K]))
def test_the_places_taken_as_exact_cuts_really_split_the_encoding(text, tokenizer):
    """The claim behind the fast path: at a place `_exact_start` accepts, encoding both sides apart gives the
    whole text's tokens; at a place `_exact_end` accepts, encoding the left side alone gives the same tokens."""
    segmenter = segmenting._Segmenter(text, tokenizer, 100)
    assert segmenter.split_stable
    whole = tokenizer.encode(text)
    for p in range(1, len(text)):
        if segmenter._exact_start(p):
            assert tokenizer.encode(text[:p]) + tokenizer.encode(text[p:]) == whole
        if segmenter._exact_end(p):
            left = tokenizer.encode(text[:p])
            assert left == whole[: len(left)] and segmenter._tokens_between(0, p) == len(left)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(documents(), tricky_texts), budget=st.integers(1, 200))
def test_invariants_with_the_local_models_tokenizer(smollm, text, budget):
    segments = segment_or_refuse(text, smollm, budget)
    if segments is not None:
        check_invariants(text, segments, smollm, budget)


class CountOnlyTokenizer:
    """A tokenizer with only the Protocol's methods (no offsets, no batch): the slow, exact path."""

    name = "o200k_base-plain"

    def encode(self, text):
        return O200K.encode(text)

    def decode(self, ids):
        return O200K.decode(ids)

    def count(self, text):
        return O200K.count(text)


@settings(max_examples=40, deadline=None)
@given(text=documents(), budget=st.integers(4, 120))
def test_invariants_with_a_tokenizer_that_only_counts(text, budget):
    tokenizer = CountOnlyTokenizer()
    check_invariants(text, segment_text(text, tokenizer, budget), tokenizer, budget)


# -- deterministic behaviour ---------------------------------------------------------------------------------

KEEPER = "The keeper climbed the stairs. She lit the lamp."
SHIP = "A ship passed the rocks. Nobody on board saw the light."
STORM = "The storm came at night. It broke three windows. By morning the sea was calm again."


def test_two_short_paragraphs_that_fit_travel_together():
    text = f"{KEEPER}\n\n{SHIP}\n\n{STORM}"
    budget = O200K.count(f"{KEEPER}\n\n{SHIP}\n\n") + 1  # not enough for the third paragraph
    segments = segment_text(text, O200K, budget)
    assert [s.text.strip() for s in segments] == [f"{KEEPER}\n\n{SHIP}", STORM]


def test_paragraph_breaks_win_over_sentence_breaks():
    text = f"{KEEPER}\n\n{STORM}"
    # Room for the first paragraph plus the storm's first sentence, but not for both paragraphs: the first
    # segment still ends at the paragraph break.
    budget = max(O200K.count(STORM), O200K.count(f"{KEEPER}\n\nThe storm came at night.")) + 1
    assert O200K.count(text) > budget
    segments = segment_text(text, O200K, budget)
    assert [s.text.strip() for s in segments] == [KEEPER, STORM]


def test_a_paragraph_over_budget_starts_a_segment_and_is_cut_at_sentence_ends():
    waves = " ".join(f"Wave number {i} broke on the rocks." for i in range(40))
    text = f"{KEEPER}\n\n{waves}\n\n{SHIP}"
    segments = segment_text(text, O200K, 60)
    check_invariants(text, segments, O200K, 60)
    assert segments[0].text.strip() == KEEPER  # not topped up with the first waves
    assert all(s.text.startswith("Wave") and s.text.rstrip().endswith("rocks.") for s in segments[1:-1])
    assert segments[-1].text.endswith(SHIP)  # the paragraph after it may join its last piece


def test_a_stanza_without_full_stops_is_cut_at_line_ends():
    lines = [f"and the lamp turned {i} times above the grey water" for i in range(30)]
    text = "\n".join(lines)
    segments = segment_text(text, O200K, 50)
    assert len(segments) > 1
    check_invariants(text, segments, O200K, 50)
    for s in segments:
        assert s.text.rstrip().split("\n")[-1] in lines  # every segment ends with a whole line


def test_cjk_sentences_are_cut_after_full_stops():
    text = "灯塔的看守人每天晚上点灯。" * 40
    segments = segment_text(text, O200K, 30)
    check_invariants(text, segments, O200K, 30)
    assert all(s.text.endswith("。") for s in segments)


def test_one_sentence_over_budget_falls_back_to_token_cuts_between_words():
    text = "the lamp " * 300 + "burned."
    segments = segment_text(text, O200K, 50)
    check_invariants(text, segments, O200K, 50)
    assert all(set(s.text.split()) <= {"the", "lamp", "burned."} for s in segments)  # no word cut in two
    assert all(s.tokens >= 40 for s in segments[:-1])  # pieces are filled close to the budget


def test_a_run_without_spaces_is_cut_at_token_boundaries():
    text = "灯塔" * 500 + "🐳" * 50
    segments = segment_text(text, O200K, 25)
    check_invariants(text, segments, O200K, 25)
    assert all(s.tokens >= 20 for s in segments[:-1])


def test_empty_and_whitespace_text_have_no_segments():
    assert segment_text("", O200K, 100) == []
    assert segment_text(" \n\n \t\u3000", O200K, 100) == []


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        segment_text("text", O200K, 0)


def test_a_character_that_cannot_fit_is_refused_by_name():
    hard = next(ch for ch in "𒀀𓀀🀄🝅" if O200K.count(ch) > 1)
    with pytest.raises(ValueError, match="cannot hold the character"):
        segment_text(f"a {hard} b", O200K, 1)
    check_invariants("a b c", segment_text("a b c", O200K, 1), O200K, 1)


def test_segment_document_reads_the_text_attribute():
    document = SimpleNamespace(text=f"{KEEPER}\n\n{SHIP}", source="keeper.md")
    assert segment_document(document, O200K, 20) == segment_text(document.text, O200K, 20)


# -- real books ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("book", BOOKS)
@pytest.mark.parametrize("budget", [512, 3000])
def test_invariants_and_packing_on_shared_books(book, budget):
    text = shared_file(f"books/{book}").read_text(encoding="utf-8")
    segments = segment_text(text, O200K, budget)
    check_invariants(text, segments, O200K, budget)
    # Greedy: no two neighbours could have shared one segment (a few tokens of slack for joins and estimates).
    assert all(a.tokens + b.tokens > budget - 8 for a, b in zip(segments, segments[1:]))


def test_books_are_counted_from_one_encoding(monkeypatch):
    """The fast path: on a hard-wrapped book almost no segment needs a second count."""
    text = shared_file("books/moby_dick.txt").read_text(encoding="utf-8")
    recounted = []
    real = segmenting._count_many
    monkeypatch.setattr(segmenting, "_count_many", lambda tok, texts: recounted.extend(texts) or real(tok, texts))
    segments = segment_text(text, O200K, 3000)
    assert sum(map(len, recounted)) < 0.02 * len(text)
    assert all(O200K.count(s.text) == s.tokens for s in segments)


def test_a_shared_book_with_the_local_models_tokenizer(smollm):
    text = shared_file("books/anne_of_green_gables_part.txt").read_text(encoding="utf-8")
    check_invariants(text, segment_text(text, smollm, 1000), smollm, 1000)


@pytest.mark.parametrize("encoding", sorted(segmenting.CHECKED_ENCODINGS))
def test_the_encodings_taken_as_split_stable_still_have_the_patterns_that_were_checked(encoding):
    """segmenting keys its fast path on the encoding's name (tiktoken has no public accessor for the pattern): the
    installed tiktoken must still give those names the patterns the reasoning was checked against."""
    import hashlib

    import tiktoken

    pattern = getattr(tiktoken.get_encoding(encoding), "_pat_str", None)
    if pattern is None:
        pytest.skip("this tiktoken keeps no pattern where the test can read it")
    assert hashlib.sha1(pattern.encode()).hexdigest() == segmenting.CHECKED_PATTERN_SHA1[encoding]
