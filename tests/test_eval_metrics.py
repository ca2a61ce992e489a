"""The eval's metrics against values computed by hand, and the bootstrap against the normal approximation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from longread.eval.cases import Case
from longread.eval.metrics import (bootstrap_interval, choice_letter, contains_match, exact_match, letter_accuracy,
                                   normalize, rouge_l, score, token_f1, truth_accuracy, truth_value)

CHOICES = {
    "A": "They were careless in guarding him.",
    "B": "Their subconscious knew that Korvin was an insoluble problem.",
    "C": "They were tired of the Ruler.",
    "D": "He was not a threat.",
}


def test_normalize_drops_case_punctuation_articles_and_extra_space():
    assert normalize("  The  Answer, is: \"4,471\"! ") == "answer is 4471"


def test_exact_and_contains_match_after_normalisation():
    assert exact_match("The Lighthouse.", ["lighthouse"]) == 1.0
    assert exact_match("the old lighthouse", ["lighthouse"]) == 0.0
    assert contains_match("It was locker number 4,471, I think.", ["4471"]) == 1.0
    # whole words only: 44711 is another number
    assert contains_match("locker 44711", ["4471"]) == 0.0
    assert contains_match("nothing here", ["4471", "here"]) == 1.0  # the best gold counts


def test_token_f1_by_hand():
    # [big, red, fox] against [red, fox, jumped]: 2 common, P = R = 2/3
    assert token_f1("The big red fox", ["a red fox jumped"]) == pytest.approx(2 / 3)
    assert token_f1("red", ["a red fox jumped", "red"]) == 1.0
    assert token_f1("blue", ["red"]) == 0.0


def test_rouge_l_by_hand():
    # LCS "the cat on the mat" = 5 of 6 tokens either way
    assert rouge_l("the cat was on the mat", ["the cat sat on the mat"]) == pytest.approx(5 / 6)
    # pred [the gunman was shot by police], ref [police kill(ed) the gunman]: LCS "the gunman" = 2
    # P = 2/6, R = 2/4, F = 2PR/(P+R) = 0.4
    assert rouge_l("the gunman was shot by police", ["police killed the gunman"]) == pytest.approx(0.4)
    # stemming: killed = kill, so the whole reference is matched
    assert rouge_l("police kill the gunman", ["police killed the gunman"]) == pytest.approx(1.0)


def test_rouge_l_takes_the_best_reference():
    refs = ["a dog ran far away", "the cat sat on the mat"]
    assert rouge_l("the cat was on the mat", refs) == pytest.approx(5 / 6)
    assert rouge_l("the cat was on the mat", refs[:1]) < 0.2


@pytest.mark.parametrize("reply, letter", [
    ("The answer is (B)", "B"),
    ("B)", "B"),
    ("**B**", "B"),
    ("Answer: b", "B"),
    ("answer:C", "C"),
    ("(B) Their subconscious knew that Korvin was an insoluble problem.", "B"),
    ("B. Their subconscious knew", "B"),
    ("C: They were tired", "C"),
    ("The correct answer is: **C) They were tired of the Ruler.**", "C"),
    ("I think the correct option is D because he said so", "D"),
    ("d", "D"),
    ("Based on the text, C.", "C"),
    # the option's text without a letter, whole or in part
    ("Their subconscious knew that Korvin was an insoluble problem.", "B"),
    ("Korvin was an insoluble problem", "B"),
    ("They were tired of the Ruler", "C"),
    # "A" followed by the option's text is the letter; followed by other words it is the article
    ("A They were careless in guarding him.", "A"),
    ("A man walked in.", None),
    ("The answer is a man who knows", None),
    ("Between (A) and (C) it is hard to say", None),
    ("I cannot answer this question.", None),
    ("", None),
])
def test_choice_letter(reply, letter):
    assert choice_letter(reply, CHOICES) == letter


def test_letter_accuracy():
    assert letter_accuracy("The answer is (B)", CHOICES, "b") == 1.0
    assert letter_accuracy("The answer is (A)", CHOICES, "B") == 0.0


@pytest.mark.parametrize("reply, value", [
    ("False. The statement is wrong.", "False"),
    ("The statement is true.", "True"),
    ("**True**", "True"),
    ("Yes, it is.", "True"),
    ("No. It never happens.", "False"),
    ("No one in the story says so", None),
    ("The answer is False, it is not true", "False"),
    ("I do not know", None),
])
def test_truth_value(reply, value):
    assert truth_value(reply) == value


def test_truth_accuracy():
    assert truth_accuracy("false.", ["False"]) == 1.0
    assert truth_accuracy("True", ["False"]) == 0.0
    assert truth_accuracy("no idea", ["False"]) == 0.0


def test_score_picks_the_metric_of_the_task():
    choice = Case(id="c", dataset="d", question="q", text="t", choices=CHOICES, answer="B")
    assert score(choice, "The answer is (B)") == (1.0, {"letter_accuracy": 1.0, "chosen": "B"})
    truth = Case(id="t", dataset="d", question="q", text="t", answers=("True",))
    assert truth.task == "truefalse" and score(truth, "False")[0] == 0.0
    short = Case(id="s", dataset="d", question="q", text="t", answers=("4471",))
    value, metrics = score(short, "It was 4471.")
    assert value == 1.0 and metrics["exact"] == 0.0 and metrics["contains"] == 1.0
    summary = Case(id="m", dataset="d", text="t", references=("the cat sat on the mat",))
    value, metrics = score(summary, "the cat was on the mat")
    assert value == pytest.approx(5 / 6) and set(metrics) == {"rouge_l", "token_f1", "repeated_sentences",
                                                         "repeated_3gram_share", "coverage", "words"}


def test_bootstrap_matches_the_normal_approximation_on_a_known_sample():
    # 50 ones and 50 zeros: mean 0.5, standard error sqrt(0.25 / 100) = 0.05, so about 0.5 +- 0.098
    mean, low, high = bootstrap_interval([1.0] * 50 + [0.0] * 50)
    assert mean == 0.5
    assert low == pytest.approx(0.402, abs=0.02) and high == pytest.approx(0.598, abs=0.02)


def test_bootstrap_is_fixed_by_its_seed():
    sample = [0.1, 0.9, 0.4, 0.3, 0.8, 0.2, 0.7]
    assert bootstrap_interval(sample) == bootstrap_interval(sample)
    assert bootstrap_interval(sample, seed=1) != bootstrap_interval(sample, seed=2)


def test_bootstrap_degenerate_samples():
    assert bootstrap_interval([0.75] * 4) == (0.75, 0.75, 0.75)
    mean, low, high = bootstrap_interval([1.0])
    assert mean == 1.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in bootstrap_interval([]))


@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=2, max_size=40))
def test_bootstrap_interval_contains_the_mean(values):
    mean, low, high = bootstrap_interval(values, resamples=200)
    assert low - 1e-9 <= mean <= high + 1e-9
    assert 0.0 <= low <= high <= 1.0


# -- aggregate questions and summaries beyond ROUGE ------------------------------------------------------------------
def test_list_f1_by_hand():
    from longread.eval.metrics import list_f1

    # 2 of 3 gold numbers listed, plus one that is not gold: precision 2/3, recall 2/3
    f1, precision, recall = list_f1("The stones read 4471, 5555 and 1234.", ["4471", "5555", "9999"],
                                    "List every number on the road to Tharby, as of 1790.")
    assert (precision, recall) == (2 / 3, 2 / 3) and f1 == pytest.approx(2 / 3)
    # names: the question's own name does not count as listed
    f1, precision, recall = list_f1("Ships from Tharmouth: the Drathel and the Kumo.", ["Drathel", "Kumo", "Vesh"],
                                    "List the ships that sailed from Tharmouth.")
    assert (precision, recall) == (1.0, 2 / 3) and f1 == pytest.approx(0.8)
    assert list_f1("None were found.", ["Drathel"], "List the ships.") == (0.0, 0.0, 0.0)
    # where an item was found ("(part 3)") lists no value; a number outside a citation does
    assert list_f1("- 4471 (part 3)\n- 5555 (parts 1, 2)", ["4471", "5555"], "List the stones.")[1] == 1.0
    assert list_f1("- 4471 (part 3)\n- 5555 on part 7", ["4471", "5555"], "List the stones.")[1] < 1.0


def test_count_reads_the_first_number_the_question_does_not_hold():
    from longread.eval.metrics import stated_count

    assert stated_count("There were twelve ships.", "How many ships?") == 12
    assert stated_count("In 1790 there were 5 stones.", "How many stones were set in 1790?") == 5
    assert stated_count("I cannot tell.", "How many?") is None
    case = Case(id="c", dataset="needle-aggregate-count", question="How many ships sailed from Tharmouth?", text="t",
                count=12)
    assert case.task == "count" and score(case, "12 ships.")[0] == 1.0 and score(case, "11 ships")[0] == 0.0


def test_summary_metrics_by_hand():
    from longread.eval.metrics import summary_metrics

    document = "Ada Varn kept the light at Gull Point. She saved the steamer Otter."
    summary = "Ada Varn kept the light. Ada Varn kept the light. In 1948 Captain Harlow came."
    metrics = summary_metrics(summary, ["Ada kept the light at Gull Point."], document)
    assert metrics["repeated_sentences"] == 1 and metrics["words"] == 15
    assert metrics["unsupported"] == ["1948", "harlow"]
    assert metrics["unsupported_per_100_words"] == round(100 * 2 / 15, 3)
    # reference: names {ada, gull, point} and content stems {ada, kept, light, gull, point}: the summary holds
    # ada, kept, light (not gull, point) -> 3 of 5
    assert metrics["coverage"] == 0.6
