"""The needle generator: lengths, depths, the three kinds, distractors one detail apart, seeds."""

from __future__ import annotations

import random

import pytest

from longread.eval.cases import CaseError, load_cases
from longread.eval.needles import (SINGLE_TEMPLATES, Book, _Names, distractor_of, generate, single_fact,
                                   write_needles)
from longread.tokenizers import tiktoken_tokenizer

TOK = tiktoken_tokenizer("o200k_base")
_SUBJECTS = "The sailor|An old fisherman|The harbour master|A tired clerk|The widow|The cook|A boy".split("|")
_VERBS = "walked along the quay|looked at the grey water|counted the nets|mended a sail|sang a low song".split("|")
_ENDS = "before the rain came|while the gulls cried|as the tide turned|without a word|in the cold wind".split("|")


@pytest.fixture(scope="module")
def book() -> Book:
    rng = random.Random(0)
    paragraphs = []
    for _ in range(300):
        sentences = [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_ENDS)}." for _ in range(6)]
        paragraphs.append(" ".join(sentences))
    return Book("\n\n".join(paragraphs), "fixture.txt")


def depth_of(text: str, sentence: str, needles: list[str]) -> float:
    """The share of the haystack's tokens (the text without the needles) that lie before `sentence`."""
    at = text.index(sentence)
    before = TOK.count(text[:at]) - sum(TOK.count(" " + n) for n in needles if n != sentence and text.index(n) < at)
    haystack = TOK.count(text) - sum(TOK.count(" " + n) for n in needles)
    return before / haystack


def test_lengths_within_one_sentence_and_depths_where_asked(book):
    generated = generate(book, [800, 3000], [0.0, 0.25, 0.5, 1.0], seed=5)
    assert len(generated) == 2 * 4 * 3
    for case, text in generated:
        meta = case.metadata
        real = TOK.count(text)
        assert meta["tokens"] == real and meta["tokenizer"] == "o200k_base"
        assert abs(real - meta["length"]) <= 20, (case.id, real)  # a fixture sentence is about 12 tokens
        first = meta["needles"][0]
        measured = depth_of(text, first, meta["needles"])
        assert measured == pytest.approx(meta["depth"], abs=20 / meta["length"]), case.id
        assert meta["needle_depths"][0] == pytest.approx(measured, abs=0.01)
        if meta["depth"] == 0.0:
            assert text.startswith(first)
        if meta["depth"] == 1.0:
            assert text.endswith(first)
        if len(meta["needles"]) == 2:  # the second needle lies half a document away
            other = (meta["depth"] + 0.5) % 1.0
            assert depth_of(text, meta["needles"][1], meta["needles"]) == pytest.approx(other, abs=20 / meta["length"])


def test_needles_sit_between_sentences_and_answers_are_not_in_the_book(book):
    for case, text in generate(book, [1000], [0.5], seed=9):
        (answer,) = case.answers
        assert answer.lower() not in book.lower  # nothing to find without the needle
        for needle in case.metadata["needles"]:
            at = text.index(needle)
            assert at == 0 or text[at - 2 : at] == ". "  # after a sentence's end, as a sentence of its own
            assert text[at + len(needle) : at + len(needle) + 1] in (" ", "\n", "")


def test_single_pair_and_distractor(book):
    cases = {case.metadata["kind"]: (case, text) for case, text in generate(book, [1000], [0.5], seed=3)}
    single, _ = cases["single"]
    (needle,) = single.metadata["needles"]
    assert single.answers[0] in needle and single.answers[0] not in single.question
    assert single.dataset == "needle-single" and single.task == "short"

    pair, text = cases["pair"]
    first, second = pair.metadata["needles"]
    answer = pair.answers[0]
    assert answer in second and answer not in first and answer not in pair.question
    assert first in text and second in text
    # the two sentences share the bridge (a made-up name), which the question does not give
    shared = {w.strip(".,") for w in first.split()} & {w.strip(".,") for w in second.split()}
    assert any(w[:1].isupper() and w not in pair.question for w in shared)

    distractor, text = cases["distractor"]
    true, decoy = distractor.metadata["needles"]
    assert true == needle and distractor.question == single.question and distractor.answers == single.answers
    assert decoy in text and distractor.metadata["distractor"] == decoy
    assert distractor.metadata["distractor_value"] in decoy and distractor.answers[0] not in decoy


@pytest.mark.parametrize("seed", range(12))
def test_a_distractor_changes_exactly_one_identifying_detail(seed):
    rng = random.Random(seed)
    names = _Names(rng, "")
    fact = single_fact(rng, names)
    decoy = distractor_of(fact, rng, names)
    assert decoy.template == fact.template and decoy.keys == fact.keys
    changed = [k for k in fact.keys if fact.slots[k] != decoy.slots[k]]
    assert len(changed) == 1
    assert decoy.value != fact.value  # and so it answers with another value
    assert all(fact.slots[k] in fact.question for k in fact.keys)  # the question names the true details


def test_every_template_fills_its_sentence_and_question():
    names = _Names(random.Random(1), "")
    for template in SINGLE_TEMPLATES:
        fact = template.fill(names)
        assert "{" not in fact.sentence + fact.question and fact.value in fact.sentence


def test_same_seed_same_output_other_seed_other_output(book):
    one = generate(book, [800], [0.0, 1.0], seed=11)
    again = generate(book, [800], [0.0, 1.0], seed=11)
    other = generate(book, [800], [0.0, 1.0], seed=12)
    assert [(c.to_dict(), t) for c, t in one] == [(c.to_dict(), t) for c, t in again]
    assert [c.answers for c, _ in one] != [c.answers for c, _ in other]
    assert [t for _, t in one] != [t for _, t in other]


def test_repeats_give_different_needles(book):
    generated = generate(book, [800], [0.5], seed=1, repeats=3, kinds=("single",))
    assert [c.id for c, _ in generated] == [f"needle-single-800-d050-{r}" for r in range(3)]
    assert len({c.answers for c, _ in generated}) == 3


def test_bad_requests_are_refused(book):
    with pytest.raises(CaseError, match="outside 0..1"):
        generate(book, [800], [1.5], seed=0)
    with pytest.raises(CaseError, match="needs a longer book"):
        generate(book, [10_000_000], [0.5], seed=0)
    with pytest.raises(CaseError, match="unknown needle kind"):
        generate(book, [800], [0.5], seed=0, kinds=("triple",))


def test_write_needles_writes_documents_and_cases(tmp_path, book):
    source = tmp_path / "book.txt"
    source.write_text(book.text, encoding="utf-8")
    target, count = write_needles(source, [600], [0.0, 0.5], 2, tmp_path / "out")
    cases = load_cases(target)
    assert count == len(cases) == 6
    for case in cases:
        document = case.load_document()
        assert all(n in document.text for n in case.metadata["needles"])
        assert case.document_path.parent == (tmp_path / "out" / "documents").resolve()


@pytest.mark.parametrize("size", [5, 20])
def test_aggregate_needles_spread_k_facts_asked_as_a_list_and_a_count(book, size):
    generated = generate(book, [3000], [0.5], seed=4, kinds=("aggregate",), sizes=(size,))
    assert [c.task for c, _ in generated] == ["list", "count"]
    (listed, text), (counted, same_text) = generated
    assert text == same_text and listed.path == counted.path  # one document, asked twice
    values, needles = listed.metadata["values"], listed.metadata["needles"]
    assert len(set(values)) == size == len(needles) and listed.items == tuple(values) and counted.count == size
    assert all(text.count(sentence) == 1 for sentence in needles)
    assert all(v.lower() not in book.lower for v in values)  # none can be guessed from the book
    # spread: the i-th fact lies in the i-th K-th of the haystack
    depths = [depth_of(text, sentence, needles) for sentence in needles]
    assert depths == sorted(depths)
    assert all(i / size - 0.02 <= d <= (i + 1) / size + 0.02 for i, d in enumerate(depths))
    assert abs(TOK.count(text) - 3000) <= 20
    # the question names the shared place and no value
    assert all(v not in listed.question and v not in counted.question for v in values)


def test_aggregate_sizes_are_checked(book):
    with pytest.raises(CaseError, match="aggregate size 0"):
        generate(book, [3000], [0.5], seed=0, kinds=("aggregate",), sizes=(0,))
