"""The code checks behind the grounded chain: finding quotes, the specifics a claim commits to, the claim checks on
hand-made parts, conflict resolution, and the summary checks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from longread import grounding
from longread.agents.claims import Claim, Dropped, PartText, check_claim, merge_claims, parse_claims
from longread.agents.grounded import check_summary, drop_unsupported
from longread.agents.resolve import conflicting, resolve

PART = (
    "The porter at Tharby Station remembered long afterwards that Kelo Brandu always left a parcel in locker "
    "number 4471. The trains were late that winter, and the light-\nhouse on the point was dark. "
    "Mrs. Ollen paid 7,465 pounds for the old mill."
)
QUESTION = "What locker number did Kelo Brandu always leave a parcel in at Tharby Station?"


# -- quotes ----------------------------------------------------------------------------------------------------------
def test_a_verbatim_quote_is_found_at_its_span():
    quote = "Kelo Brandu always left a parcel in locker number 4471"
    start, end = grounding.find_quote(quote, PART)
    assert PART[start:end] == quote


def test_quote_marks_case_whitespace_and_line_end_hyphens_are_tolerated():
    assert grounding.find_quote("“KELO   Brandu always left a parcel”", PART) is not None
    start, end = grounding.find_quote("the lighthouse on the point was dark", PART)
    assert PART[start:end] == "the light-\nhouse on the point was dark"


def test_a_paraphrased_quote_within_a_letter_or_two_is_found_but_not_another_sentence():
    assert grounding.find_quote("Kelo Brandu alway left a parcel in lockr number 4471", PART) is not None
    assert grounding.find_quote("Kelo Brandu buried a chest under the old mill", PART) is None


def test_a_quote_with_another_number_is_never_found():
    assert grounding.find_quote("Kelo Brandu always left a parcel in locker number 4477", PART) is None
    assert grounding.find_quote("Mrs. Ollen paid 7465 pounds", PART) is not None  # the same number, unseparated


def test_an_ellipsis_quote_is_found_piece_by_piece_in_order_and_a_short_quote_is_refused():
    start, end = grounding.find_quote("The porter at Tharby Station ... locker number 4471", PART)
    assert PART[start:end].startswith("The porter") and PART[start:end].endswith("4471")
    assert grounding.find_quote("locker number 4471 ... The porter at Tharby", PART) is None  # out of order
    assert grounding.find_quote("locker 4471", PART) is None  # under MIN_QUOTE_WORDS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("harbour boats keeper lamp night storm green book morning dawn wrote".split()),
                min_size=12, max_size=40), st.data())
def test_any_run_of_words_of_a_text_is_found_where_it_is(words, data):
    text = " ".join(words) + "."
    i = data.draw(st.integers(0, len(words) - 3))
    j = data.draw(st.integers(i + 3, len(words)))
    quote = " ".join(words[i:j])
    start, end = grounding.find_quote(quote, text)
    assert grounding.fold(text[start:end]).text == grounding.fold(quote).text


def test_the_sentence_around_a_quote_is_whole():
    start, end = grounding.find_quote("always left a parcel", PART)
    lo, hi = grounding.sentence_around(PART, start, end)
    assert PART[lo:hi] == ("The porter at Tharby Station remembered long afterwards that Kelo Brandu always left a "
                           "parcel in locker number 4471.")


# -- claims on hand-made parts ---------------------------------------------------------------------------------------
def checked(text: str, *quotes: str, question: str = QUESTION, known: str = "") -> Claim | Dropped:
    return check_claim(Claim(text, quotes, part=2), PartText(PART, start=1000), question, known)


def test_a_true_claim_passes_with_the_document_spans_of_its_quote_and_its_sentence():
    claim = checked("Kelo Brandu left a parcel in locker number 4471.", "always left a parcel in locker number 4471")
    assert isinstance(claim, Claim)
    (start, end), = claim.spans  # the whole sentence the quote lies in, in document offsets
    assert PART[start - 1000 : end - 1000] == claim.source
    assert claim.source.startswith("The porter at Tharby Station") and claim.source.endswith("4471.")
    assert claim.parts == (2,)


def test_a_quote_not_in_the_part_drops_the_claim_unless_code_finds_the_sentence_that_supports_it():
    outcome = checked("The locker number was 4417.", "He always kept the parcel in locker 4417 at the station")
    assert isinstance(outcome, Dropped) and outcome.reason.startswith("quote not in part 3")
    # a small model copying the format's wording instead of a quote: the claim itself is true, and code finds it
    located = checked("The locker number was 4471.", "the exact words of the source text that show it")
    assert isinstance(located, Claim) and located.located and located.source.endswith("locker number 4471.")
    assert isinstance(checked("The locker number was 4471."), Claim)  # no quote at all: the same search


def test_a_number_not_in_its_quote_drops_the_claim():
    # the invented answer of a worker whose part lacks the fact, with a real but unrelated quote
    outcome = checked("The secret number of the locker was 12345.", "The trains were late that winter")
    assert isinstance(outcome, Dropped) and outcome.reason == "number 12345 not in its quote"


def test_a_name_not_in_its_quote_drops_the_claim_unless_the_claims_it_builds_on_hold_it():
    outcome = checked("Ada Varn paid for the old mill.", "paid 7,465 pounds for the old mill")
    assert isinstance(outcome, Dropped) and outcome.reason == "name ada, varn not in its quote"
    built_on = checked("Ada Varn paid for the old mill.", "paid 7,465 pounds for the old mill",
                       known="(part 1) Ada Varn married Mrs. Ollen.")
    assert isinstance(built_on, Claim)


def test_words_that_are_not_in_the_quote_or_a_restated_question_drop_the_claim():
    invented = checked("The word that opened the chest was brathelon.", "The trains were late that winter",
                       question="What word opened the chest?")
    assert isinstance(invented, Dropped) and invented.reason == "its words are not in its quote"
    # a claim that only echoes the question, over the sentence that answers it, becomes that sentence
    echo = checked("Kelo Brandu always leaves a parcel at Tharby Station.", "Kelo Brandu always left a parcel")
    assert isinstance(echo, Claim) and echo.origin == "restated" and echo.text == echo.source
    assert echo.text.endswith("locker number 4471.")
    # over a sentence that does not, it is dropped
    idle = checked("Kelo Brandu always leaves a parcel at Tharby Station.", "The trains were late that winter")
    assert isinstance(idle, Dropped) and idle.reason == "says nothing the question does not"


def test_a_claim_that_takes_a_name_from_the_question_is_its_sentence_or_nothing():
    # the worker's inference (the decoy's number at the question's station) is dropped; its sentence is kept as
    # the claim, naming Ybrook, so the conflict with the true claim is settled against it (below)
    decoy_part = PART.replace("Tharby", "Ybrook").replace("4471", "5555")
    claimed = check_claim(Claim("Kelo Brandu left a parcel in locker number 5555 at Tharby Station.",
                                ("Kelo Brandu always left a parcel in locker number 5555",), part=7),
                          PartText(decoy_part), QUESTION)
    assert isinstance(claimed, Claim) and claimed.origin == "restated"
    assert claimed.text.startswith("The porter at Ybrook Station") and "Tharby" not in claimed.text
    brig = check_claim(Claim("The brig that Trulboth Traemsta sailed aboard was built in the year 1739.",
                             ("The Noldousby had been built at Belkelby in the year 1739.",)),
                       PartText("Dusk fell. The Noldousby had been built at Belkelby in the year 1739. Rain."),
                       "In what year was the brig that Trulboth Traemsta sailed aboard built?")
    assert isinstance(brig, Claim) and brig.text == "The Noldousby had been built at Belkelby in the year 1739."
    far = " The road went on." * 60  # more than the few lines around a quote that a name may come from
    paris = check_claim(Claim("The town where Kelo Brandu was born is known for Paris.", ("Paris was far away",)),
                        PartText(PART + far + " Paris was far away."),
                        "What is the town where Kelo Brandu was born known for?")
    assert isinstance(paris, Dropped) and paris.reason.startswith("name")


def test_a_claim_about_another_entity_passes_its_checks_and_loses_the_conflict():
    decoy_part = PART.replace("Tharby", "Ybrook").replace("4471", "5555")
    decoy = check_claim(Claim("Kelo Brandu left a parcel in locker number 5555.",
                              ("Kelo Brandu always left a parcel in locker number 5555",), part=7),
                        PartText(decoy_part), QUESTION)
    true = checked("Kelo Brandu left a parcel in locker number 4471.", "Kelo Brandu always left a parcel in locker number 4471")
    assert isinstance(decoy, Claim) and isinstance(true, Claim)  # each true of its own sentence
    assert conflicting(true, decoy, QUESTION)
    resolution = resolve([decoy, true], QUESTION)
    assert resolution.claims == [true]
    (aside, why), = resolution.set_aside
    assert aside == decoy and "does not name tharby" in why


def test_claims_that_answer_different_parts_of_a_question_do_not_conflict():
    question = "What yearly festival is the town where Kelo Brandu was born known for?"
    born = Claim("Kelo Brandu was born in Tharby.", source="Kelo Brandu was born in the little town of Tharby.")
    festival = Claim("Tharby is known for its festival of Zarn.",
                     source="The town of Tharby is known far and wide for its yearly festival of Zarn.", part=5)
    assert not conflicting(born, festival, question)
    assert resolve([festival, born], question).claims == [born, festival]  # the one naming the question's person first


def test_parse_reads_the_line_format_json_inline_quotes_and_none():
    reply = ('1. **Claim:** Kelo left a parcel in locker 4471.\n   Quote: "always left a parcel in locker number 4471"\n'
             'Claim: The trains were late.\nQuote: "The trains were late that winter"')
    claims = parse_claims(reply, 3)
    assert [c.text for c in claims] == ["Kelo left a parcel in locker 4471.", "The trains were late."]
    assert claims[0].quotes == ("always left a parcel in locker number 4471",) and claims[0].part == 3
    assert parse_claims('[{"claim": "A mill was sold.", "quote": "paid 7,465 pounds for the old mill"}]', 0)[0].quotes \
        == ("paid 7,465 pounds for the old mill",)
    assert parse_claims('Claim: The mill was sold ("paid 7,465 pounds for the old mill").', 0)[0].quotes == \
        ("paid 7,465 pounds for the old mill",)
    assert parse_claims("Claim: none", 0) == [] and parse_claims("NOTHING RELEVANT", 0) == []


def test_the_same_claim_from_two_parts_is_passed_once_with_both_parts():
    one = Claim("Kelo left a parcel in locker 4471.", part=1, source="s", spans=((5, 9),), parts=(1,))
    two = Claim("Kelo left a parcel in locker 4471!", part=4, source="t", spans=((50, 59),), parts=(4,))
    merged = merge_claims([one], [two])
    assert len(merged) == 1 and merged[0].cited_parts == (1, 4) and merged[0].spans == ((5, 9), (50, 59))


# -- summaries --------------------------------------------------------------------------------------------------------
DOCUMENT = "Ada Varn kept the light at Gull Point for 31 years. In the storm she saved the steamer Otter."


def test_summary_check_removes_repeated_sentences_and_names_what_the_document_lacks():
    summary = ("Ada Varn kept the light. She saved the steamer Otter in the storm. Ada Varn kept the light. "
               "It was launched in 1948 by Captain Harlow.")
    check = check_summary(summary, DOCUMENT)
    assert check.repeated == ["Ada Varn kept the light."]
    assert check.text.count("Ada Varn kept the light.") == 1
    assert check.unsupported == ["1948", "harlow"]


def test_the_last_resort_drops_the_sentences_that_name_what_the_document_lacks():
    check = drop_unsupported("Ada Varn kept the light for 31 years. It was launched in 1948.", DOCUMENT)
    assert check.text == "Ada Varn kept the light for 31 years." and check.dropped == ["It was launched in 1948."]


def test_repetition_metrics_count_by_hand():
    text = "The lamp was lit. The sea was calm. The lamp was lit."
    assert grounding.repeated_sentences(text) == ["The lamp was lit."]
    # words: the lamp was lit the sea was calm the lamp was lit -> 10 trigrams, 2 repeat earlier ones
    assert grounding.repeated_ngram_share(text) == 2 / 10


def test_a_name_from_just_before_the_quote_passes_where_the_sentence_says_she():
    part = PartText("Ada Varn kept the light at Gull Point. In the great storm she saved the steamer Otter.")
    claim = check_claim(Claim("Ada Varn saved the steamer Otter.", ("she saved the steamer Otter",)), part, None)
    assert isinstance(claim, Claim) and claim.source == "In the great storm she saved the steamer Otter."


STORY_PART = ("The tall man loitered a moment before a garish window display. Then he turned and took up the pursuit "
              "once more. Getting through that dome had been his first urgent problem.")


def test_a_claim_that_copies_its_part_is_kept_as_the_sentences_found_and_nothing_else():
    # no quote, or one too short to check: the claim's own sentences are looked up in the part
    copied = ("Then he turned and took up the pursuit once more. He was born on Venus in 2101. "
              "Getting through that dome had been his first urgent problem.")
    for quotes in ((), ("You see,",)):
        kept = check_claim(Claim(copied, quotes, part=0), PartText(STORY_PART))
        assert isinstance(kept, Claim) and kept.origin == "copied"
        assert kept.text == ("Then he turned and took up the pursuit once more. Getting through that dome had been "
                             "his first urgent problem.")  # the invented sentence (Venus, 2101) is gone
    invented = check_claim(Claim("He was born on Venus in 2101.", (), part=0), PartText(STORY_PART))
    assert isinstance(invented, Dropped)


def test_a_claims_list_number_and_markdown_are_not_part_of_it():
    (claim,) = parse_claims("Claim: 1. **The tall man loitered a moment before a garish window display.**", 0)
    assert claim.text == "The tall man loitered a moment before a garish window display."
    assert isinstance(check_claim(claim, PartText(STORY_PART)), Claim)  # "1" is no number it states


def test_a_summary_claim_that_says_more_than_its_quote_is_kept_as_the_quoted_sentence():
    claim = Claim("The tall man, a spy from Venus, loitered before a window display.",
                  ("loitered a moment before a garish window display",), part=0)
    kept = check_claim(claim, PartText(STORY_PART))  # a summary: no question
    assert isinstance(kept, Claim) and kept.origin == "restated"
    assert kept.text == "The tall man loitered a moment before a garish window display."
    assert isinstance(check_claim(claim, PartText(STORY_PART), "Who was the tall man?"), Dropped)  # a question's


def test_a_summarys_list_numbers_are_layout_not_inventions():
    document = "Ada Varn kept the light at Gull Point. She saved the steamer Otter."
    listed = "1. Ada Varn kept the light.\n2) She saved the Otter.\n- Gull Point is named."
    assert grounding.unsupported_entities(listed, document) == []
    assert grounding.unsupported_entities("In 1848 Ada Varn kept the light.", document) == ["1848"]


def test_a_summarys_list_survives_the_repeat_check_and_its_numbers_are_not_flagged():
    from longread.agents.grounded import check_summary

    draft = "The main people are:\n1. Ada Varn\n2. The steamer Otter\nAda Varn kept the light.\nAda Varn kept the light."
    check = check_summary(draft, "Ada Varn kept the light at Gull Point. She saved the steamer Otter.")
    assert check.text == "The main people are:\n1. Ada Varn\n2. The steamer Otter\nAda Varn kept the light."
    assert check.unsupported == [] and check.repeated == ["Ada Varn kept the light."]
