"""The grounded chain (the default notes, `chain`): workers' claims checked by code before they travel, the manager
reading only checked claims with conflicts settled, the collapse stage, the summary check, resume, and routing.

The fake model is routed by agent role (and the segment or step its tag names); a worker's reply is built from
the part it reads, taken from the Reader's own segments, never from the prompt's wording."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver

from longread import Reader
from longread.testing import MockModel

FILLER = ("The harbour master counted the boats each morning at dawn. He wrote the number in a green book. "
          "On windy days fewer boats went out, and he wrote that down too. ")
FACT = "The porter at Tharby Station remembered that Kelo Brandu always left a parcel in locker number 4471."
DECOY = "The porter at Ybrook Station remembered that Kelo Brandu always left a parcel in locker number 5555."
QUESTION = "What locker number did Kelo Brandu always leave a parcel in at Tharby Station?"
WINDOW = 1024


def book(*inserts: tuple[int, str], paragraphs: int = 24) -> str:
    body = [f"Paragraph {i}. " + FILLER * 2 for i in range(paragraphs)]
    for at, sentence in inserts:
        body[at] = body[at] + " " + sentence
    return "\n\n".join(body)


def parts_of(text: str, strategy: str = "chain", question: str | None = QUESTION, window: int = WINDOW):
    """The segments the chain will read (the same planning as the run)."""
    reader = Reader(text, model=MockModel(), window=window, strategy=strategy)
    strategy_obj = reader.strategy
    plan = strategy_obj.plan(reader.context(), question)
    return plan.segments


def sentence_with(part: str, word: str) -> str | None:
    return next((s for s in re.split(r"(?<=[.!?])\s+", part) if word in s), None)


def worker_reply(segments):
    """A worker that states the locker number its part holds, with its sentence as the quote, and, on a part that
    holds none, invents one (the failure the grounded chain exists for) quoting a real but unrelated sentence."""

    def reply(call):
        part = segments[call.segment].text
        for number in ("4471", "5555"):
            sentence = sentence_with(part, number)
            if sentence:
                return f"Claim: Kelo Brandu left a parcel in locker number {number}.\nQuote: \"{sentence}\""
        return "Claim: The secret locker number was 12345.\nQuote: \"He wrote the number in a green book.\""

    return reply


def manager_prompt(model) -> str:
    return model.calls_by("manager")[-1].messages[-1]["content"]


# -- claims that fail their checks never reach the manager ------------------------------------------------------------
@pytest.mark.parametrize("form", ["chain", "map"])
def test_an_invented_claim_never_reaches_the_manager_and_the_trace_says_why(form):
    text = book((15, FACT))
    segments = parts_of(text, f"chain:form={form}")
    model = MockModel(replies={"worker": worker_reply(segments), "manager": "Locker 4471."})
    result = Reader(text, model=model, window=WINDOW, strategy=f"chain:form={form}").ask(QUESTION)

    prompt = manager_prompt(model)
    assert "4471" in prompt and "12345" not in prompt
    assert len(model.calls_by("worker")) == len(segments) and len(model.calls_by("manager")) == 1
    dropped = result.extras["dropped"]
    assert len(dropped) == len(segments) - 1
    assert {d["reason"] for d in dropped} == {"number 12345 not in its quote"}
    assert [c["text"] for c in result.extras["claims"]] == ["Kelo Brandu left a parcel in locker number 4471."]
    # the citation is the fact's sentence in the document, not the whole part
    (citation,) = result.citations
    assert text[citation.start : citation.end] == FACT
    assert result.extras["form"] == form


def test_a_chain_worker_sees_the_checked_claims_of_earlier_parts_and_never_a_dropped_one():
    text = book((3, FACT))
    segments = parts_of(text)
    model = MockModel(replies={"worker": worker_reply(segments), "manager": "4471"})
    Reader(text, model=model, window=WINDOW, strategy="chain").ask(QUESTION)
    workers = model.calls_by("worker")
    fact_part = next(i for i, s in enumerate(segments) if "4471" in s.text)
    for call in workers:
        shown = call.messages[-1]["content"].split("Checked claims from the earlier parts:\n", 1)[1]
        shown = shown.split("\n\nQuestion:", 1)[0]
        assert "12345" not in shown
        assert ("locker number 4471" in shown) == (call.segment > fact_part)


def test_map_workers_read_at_once():
    text = book((3, FACT))
    segments = parts_of(text, "chain:form=map")
    meet = threading.Barrier(2, timeout=20)  # two workers must be in a call at the same time to pass it
    reply = worker_reply(segments)

    def worker(call):
        if call.segment in (0, 1):
            meet.wait()
        return reply(call)

    model = MockModel(replies={"worker": worker, "manager": "4471"})
    result = Reader(text, model=model, window=WINDOW, strategy="chain:form=map").ask(QUESTION)
    assert result.text == "4471" and len(model.calls_by("worker")) == len(segments)


def test_no_checked_claim_means_not_found_without_a_manager_call():
    text = book()
    segments = parts_of(text)
    model = MockModel(replies={"worker": worker_reply(segments), "manager": "invented"})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").ask(QUESTION)
    assert model.calls_by("manager") == [] and result.extras["not_found"]
    assert result.text.startswith("The document does not say") and result.citations == []


# -- conflicts ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("claims_station", [False, True])
def test_a_distractor_never_reaches_the_manager(claims_station):
    text = book((4, DECOY), (18, FACT))
    segments = parts_of(text)
    station = " at Tharby Station" if claims_station else ""

    def worker(call):
        part = segments[call.segment].text
        if "5555" in part:  # the decoy's worker answers from the decoy's sentence
            return (f"Claim: Kelo Brandu left a parcel in locker number 5555{station}.\n"
                    f"Quote: \"{sentence_with(part, '5555')}\"")
        return worker_reply(segments)(call)

    model = MockModel(replies={"worker": worker, "manager": "4471"})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").ask(QUESTION)
    prompt = manager_prompt(model)
    assert "4471" in prompt and "5555" not in prompt
    # Naming the question's station, which its sentence does not, the claim is restated as its sentence (naming
    # Ybrook); either way it loses the conflict to the claim whose sentence names Tharby Station.
    (aside,) = result.extras["trace"]["set_aside"]
    assert "5555" in aside["claim"] and "does not name tharby" in aside["reason"]
    assert ("Ybrook" in aside["claim"]) == claims_station


# -- aggregate questions and the collapse stage --------------------------------------------------------------------------
SHIPS = ["Drathel", "Kumoray", "Zanforth", "Velimor", "Oskaro", "Brindle", "Tavrin", "Quellis", "Morvane", "Sellith",
         "Pardoe", "Ithrane"]


def ship_book() -> str:
    return book(*((2 * i, f"One of the ships that ever sailed from Tharmouth was named the {name}.")
                  for i, name in enumerate(SHIPS)), paragraphs=26)


def ship_worker(segments):
    def reply(call):
        lines = []
        for sentence in re.split(r"(?<=[.!?])\s+", segments[call.segment].text):
            if "ships that ever sailed" in sentence:
                name = sentence.rsplit(" ", 1)[1].rstrip(".")
                lines.append(f"Claim: A ship was named the {name}.\nQuote: \"was named the {name}\"")
        return "\n".join(lines) or "Claim: none"

    return reply


def test_a_list_question_is_answered_by_code_with_every_checked_claim_and_its_part():
    text = ship_book()
    question = "List the names of all the ships that sailed from Tharmouth."
    segments = parts_of(text, question=question)
    model = MockModel(replies={"worker": ship_worker(segments), "manager": "the ships"})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").ask(question)
    assert model.calls_by("manager") == []  # a small manager shown twelve items writes two: code lists them
    lines = result.text.splitlines()[1:]
    assert [line.split(" (part")[0] for line in lines] == [f"- A ship was named the {name}" for name in SHIPS]
    where = {s.index: s for s in segments}
    for line, name in zip(lines, SHIPS):
        part = int(line.rsplit("(part ", 1)[1].rstrip(")"))
        assert f"named the {name}." in where[part - 1].text  # each item cites the part that holds it
    assert result.extras["trace"]["items"] == "list"


def test_a_count_is_the_number_of_distinct_checked_items_and_its_readers_are_asked_for_a_list():
    text = ship_book()
    question = "How many ships sailed from Tharmouth?"
    segments = parts_of(text, question=question)

    def twice(call):  # every item claimed twice, in other words: one item each, not two
        reply = ship_worker(segments)(call)
        return reply if reply == "Claim: none" else reply + "\n" + reply.replace("A ship was named", "A ship named")

    model = MockModel(replies={"worker": twice, "manager": "3"})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").ask(question)
    assert result.text.startswith(f"{len(SHIPS)}:") and len(result.text.splitlines()) == len(SHIPS) + 1
    asked = model.calls_by("worker")[0].messages[-1]["content"]
    assert "List every one of the ships that sailed from Tharmouth." in asked and "How many" not in asked
    assert model.calls_by("manager") == []


def test_claims_that_do_not_fit_are_merged_in_groups_every_call_inside_the_window():
    text = ship_book()
    question = "Compare all the ships that sailed from Tharmouth."
    window = 480
    segments = parts_of(text, question=question, window=window)

    def manager(call):
        if call.step == "collapse":  # merge: keep every claim of the group, shorter
            content = call.messages[-1]["content"]
            sources = re.findall(r'Source: "(One of the ships[^"]*)"', content)
            return "\n".join(f"Claim: The {s.rsplit(' ', 1)[1].rstrip('.')} sailed from Tharmouth.\nQuote: \"{s}\""
                             for s in sources)
        return "the ships"

    model = MockModel(replies={"worker": ship_worker(segments), "manager": manager})
    reader = Reader(text, model=model, window=window, strategy="chain")
    result = reader.ask(question)
    collapses = [c for c in model.calls_by("manager") if c.step == "collapse"]
    assert collapses, "the claims should not fit one manager call at this window"
    assert all(c.prompt_tokens + c.max_new_tokens <= window for c in model.calls)
    final = manager_prompt(model)
    assert sum(f"The {name} sailed" in final for name in SHIPS) >= len(SHIPS) - 2  # what was cut to fit is traced
    assert result.extras["trace"].get("collapse_rounds", 0) >= 1


def test_auto_reads_the_whole_document_for_an_aggregate_question():
    text = ship_book()
    question = "How many ships sailed from Tharmouth?"
    segments = parts_of(text, question=question)
    model = MockModel(replies={"worker": ship_worker(segments), "manager": "12", "reader": "retrieval"})
    events = []
    result = Reader(text, model=model, window=WINDOW, strategy="auto").ask(question, on_event=events.append)
    assert model.calls_by("reader") == [] and result.text.startswith("12:")
    assert [e.message for e in events if e.kind == "routed"] == ["an aggregate question, reading every part"]
    assert result.extras["route"] == "chain" and "aggregate" in result.extras["route_reason"]


# -- summaries -----------------------------------------------------------------------------------------------------------
STORY = ("Ada Varn kept the light at Gull Point. Every night she climbed the tower and lit the lamp. "
         "In the great storm she saved the steamer Otter. The Board sold the point and an electric light took the "
         "lamp's place.")


def summary_worker(segments):
    def reply(call):
        part = segments[call.segment].text
        first = re.split(r"(?<=[.!?])\s+", part.strip())[1]  # (the first is "Paragraph N.")
        claims = [f"Claim: {first}\nQuote: \"{first}\""]
        if "Ada Varn" in part:
            claims.append('Claim: Ada Varn saved the steamer Otter.\nQuote: "In the great storm she saved the steamer Otter"')
        return "\n".join(claims)

    return reply


def test_a_summary_without_repeats_and_with_one_retry_for_what_the_document_lacks():
    text = book((1, STORY), paragraphs=12)
    segments = parts_of(text, question=None)

    def manager(call):
        if call.step == "fix":
            return "Ada Varn kept the light at Gull Point. She saved the steamer Otter. Captain Harlow came in 1948."
        return ("Ada Varn kept the light at Gull Point. She saved the steamer Otter. Ada Varn kept the light at Gull "
                "Point. It was launched in 1948 by Captain Harlow.")

    model = MockModel(replies={"worker": summary_worker(segments), "manager": manager})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").summarize()
    fixes = [c for c in model.calls_by("manager") if c.step == "fix"]
    assert len(fixes) == 1 and "1948" in fixes[0].messages[-1]["content"]
    assert result.text == "Ada Varn kept the light at Gull Point. She saved the steamer Otter."
    check = result.extras["trace"]["summary_check"]
    assert check["repeated_removed"] == ["Ada Varn kept the light at Gull Point."]
    assert check["unsupported"] == ["1948", "harlow"] and check["retried"]
    assert check["after_retry"]["dropped_sentences"] == ["Captain Harlow came in 1948."]
    assert result.extras["form"] == "map"  # a summary's workers read alone by default


def test_a_clean_summary_needs_no_retry():
    text = book((1, STORY), paragraphs=12)
    segments = parts_of(text, question=None)
    model = MockModel(replies={"worker": summary_worker(segments),
                               "manager": "Ada Varn kept the light at Gull Point. She saved the steamer Otter."})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").summarize()
    assert [c.step for c in model.calls_by("manager")] == [None]
    assert result.extras["trace"]["summary_check"]["unsupported"] == []


# -- resume, async, the window ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["chain", "map"])
def test_a_failed_run_resumes_without_repeating_a_finished_worker(form):
    text = book((15, FACT))
    strategy = f"chain:form={form},concurrency=1"
    segments = parts_of(text, strategy)
    checkpointer = InMemorySaver()
    model = MockModel(replies={"worker": worker_reply(segments), "manager": "4471"}, fail_on_calls={3})
    reader = Reader(text, model=model, window=WINDOW, strategy=strategy, checkpointer=checkpointer)
    with pytest.raises(RuntimeError, match="injected failure at call 3"):
        reader.ask(QUESTION)
    done = [c.segment for c in model.calls_by("worker")]
    assert len(done) >= 2 and (form == "map" or done == [0, 1])
    result = reader.ask(QUESTION)
    again = [c.segment for c in model.calls_by("worker")][len(done):]
    assert sorted(done + again) == list(range(len(segments)))  # every part read once over both runs
    assert result.text == "4471"


def test_async_gives_the_same_answer_and_calls():
    text = book((15, FACT))
    segments = parts_of(text)
    sync = MockModel(replies={"worker": worker_reply(segments), "manager": "4471"})
    asyn = MockModel(replies={"worker": worker_reply(segments), "manager": "4471"})
    a = Reader(text, model=sync, window=WINDOW, strategy="chain").ask(QUESTION)
    b = asyncio.run(Reader(text, model=asyn, window=WINDOW, strategy="chain").aask(QUESTION))
    assert a.text == b.text and a.citations == b.citations
    assert [c.prompt for c in sync.calls] == [c.prompt for c in asyn.calls]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=st.integers(1, 40), window=st.integers(500, 2000), summary=st.booleans())
def test_every_call_of_the_grounded_chain_fits_its_window(paragraphs, window, summary):
    text = book((0, FACT), (paragraphs - 1, STORY), paragraphs=paragraphs) if paragraphs > 1 else book((0, FACT), paragraphs=1)
    question = None if summary else QUESTION
    segments = parts_of(text, question=question, window=window)
    model = MockModel(replies={"worker": (summary_worker if summary else worker_reply)(segments)},
                      completion_tokens=400)
    reader = Reader(text, model=model, window=window, strategy="chain")
    reader.summarize() if summary else reader.ask(question)
    assert model.calls and all(c.prompt_tokens + c.max_new_tokens <= window for c in model.calls)


# -- what a person sees --------------------------------------------------------------------------------------------------
def test_trace_and_json_show_every_claim_kept_or_dropped_with_the_reason(tmp_path, monkeypatch, cli_isolated):
    import json

    import longread.backends
    from typer.testing import CliRunner

    from longread.cli import app

    document = tmp_path / "book.txt"
    document.write_text(book((15, FACT)), encoding="utf-8")
    segments = parts_of(document.read_text(encoding="utf-8"))
    model = MockModel(replies={"worker": worker_reply(segments), "manager": "Locker 4471."})
    monkeypatch.setattr(longread.backends, "get_model", lambda *args, **kwargs: model)
    args = ["ask", str(document), QUESTION, "--strategy", "chain", "--window", str(WINDOW)]
    traced = CliRunner().invoke(app, [*args, "--trace", "--no-stream"], catch_exceptions=False)
    assert traced.exit_code == 0, traced.output
    assert traced.stdout.startswith("Locker 4471.")
    trace = traced.stderr
    assert re.search(r"kept \(part \d+\): Kelo Brandu left a parcel in locker number 4471\.", trace)
    assert len(re.findall(r"dropped \(part \d+\): The secret locker number was 12345\. -- number 12345 not in its "
                          r"quote", trace)) == len(segments) - 1
    data = json.loads(CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False).stdout)
    assert [c["text"] for c in data["claims"]] == ["Kelo Brandu left a parcel in locker number 4471."]
    assert {d["reason"] for d in data["dropped"]} == {"number 12345 not in its quote"}


# -- following a name -------------------------------------------------------------------------------------------------
BORN = "Kelo Brandu was born in the little town of Tharby, though she seldom spoke of it."
FESTIVAL = "The town of Tharby is known far and wide for its yearly festival of Zarnath."
PAIR_QUESTION = "What yearly festival is the town where Kelo Brandu was born known for?"


def test_the_manager_follows_a_claims_new_name_to_the_sentence_that_answers_the_question():
    text = book((3, BORN), (17, FESTIVAL))
    segments = parts_of(text, question=PAIR_QUESTION)

    def worker(call):  # only the first fact is found by a worker: the second part's worker misses the link
        part = segments[call.segment].text
        if "was born" in part:
            return f"Claim: Kelo Brandu was born in Tharby.\nQuote: \"{BORN}\""
        return "Claim: none"

    model = MockModel(replies={"worker": worker, "manager": "The festival of Zarnath."})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").ask(PAIR_QUESTION)
    prompt = manager_prompt(model)
    assert "Kelo Brandu was born in Tharby." in prompt and FESTIVAL in prompt
    assert result.extras["trace"]["bridged"] == [FESTIVAL]
    cited = {text[c.start : c.end] for c in result.citations}
    assert FESTIVAL in cited  # the answer repeats its name: the sentence it came from is cited


def test_a_rare_name_of_the_question_anchors_the_reading_when_no_worker_found_a_claim():
    text = book((3, BORN), (17, FESTIVAL))
    segments = parts_of(text, question=PAIR_QUESTION)
    model = MockModel(replies={"worker": "Claim: none", "manager": "Zarnath."})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").ask(PAIR_QUESTION)
    # Kelo Brandu is named by one sentence of the book: it is read, and the town it names leads to the festival
    prompt = manager_prompt(model)
    assert BORN in prompt and FESTIVAL in prompt and len(model.calls_by("worker")) == len(segments)
    assert result.extras["trace"]["bridged"] == [BORN, FESTIVAL]
    common = book(*((i, BORN) for i in range(0, 24, 4)), (17, FESTIVAL))  # named six times: no anchor
    quiet = MockModel(replies={"worker": "Claim: none", "manager": "x"})
    assert Reader(common, model=quiet, window=WINDOW, strategy="chain").ask(PAIR_QUESTION).extras["not_found"]


def test_an_aggregate_question_is_read_in_the_map_form_one_claim_per_item():
    text = ship_book()
    question = "How many ships sailed from Tharmouth?"
    segments = parts_of(text, question=question)
    model = MockModel(replies={"worker": ship_worker(segments), "manager": "12"})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").ask(question)
    assert result.extras["form"] == "map"
    worker = model.calls_by("worker")[0].messages[-1]["content"]
    assert "Checked claims from the earlier parts" not in worker and "Do not count" in worker
    compare = "Compare the ships that sailed from Tharmouth across the document."  # the manager writes this one
    model = MockModel(replies={"worker": ship_worker(parts_of(text, question=compare)), "manager": "12"})
    Reader(text, model=model, window=WINDOW, strategy="chain").ask(compare)
    assert "(12 checked claims in all, each found once.)" in manager_prompt(model)


@pytest.mark.parametrize("question, kind, listing", [
    ("How many hounds were kept at Thingumby?", "count", "List every one of the hounds that were kept at Thingumby."),
    ("How many milestones on the old road were carved with a number?", "count",
     "List every one of the milestones on the old road that were carved with a number."),
    ("How many ships sailed from Tharmouth?", "count", "List every one of the ships that sailed from Tharmouth."),
    ("List the names of every hound kept at Thingumby.", "list", None),
    ("Which ships sailed from every port?", "list", None),
    ("How many barrels did the schooner carry?", None, None),  # one stated figure
    ("How many barrels were loaded in total?", None, None),  # a total of figures: the manager adds them up
    ("Compare all the ships that sailed from Tharmouth.", None, None),  # prose: the manager writes it
    ("Who kept the light?", None, None),
])
def test_which_questions_code_lists_or_counts(question, kind, listing):
    from longread.agents.questions import items_asked, listing_question

    assert items_asked(question) == kind
    if listing is not None:
        assert listing_question(question) == listing


def test_a_list_questions_readers_see_their_parts_sentences_that_name_the_questions_names():
    text = ship_book()
    question = "List the names of all the ships that sailed from Tharmouth."
    segments = parts_of(text, question=question)
    model = MockModel(replies={"worker": ship_worker(segments), "manager": "x"})
    Reader(text, model=model, window=WINDOW, strategy="chain").ask(question)
    for call in model.calls_by("worker"):
        part = segments[call.segment].text
        prompt = call.messages[-1]["content"]
        shown = prompt[prompt.index(part) + len(part):]  # what follows the part itself
        in_part = [n for n in SHIPS if f"named the {n}." in part]
        assert all(f"named the {n}." in shown for n in in_part)  # every item sentence, repeated next to the task
        assert not any(f"named the {n}." in shown for n in SHIPS if n not in in_part)
        assert call.prompt_tokens + call.max_new_tokens <= WINDOW
    plain = MockModel(replies={"worker": ship_worker(segments), "manager": "x"})
    Reader(text, model=plain, window=WINDOW, strategy="chain").ask("Compare all the ships that sailed from Tharmouth.")
    assert all("closest to the question" not in c.messages[-1]["content"] for c in plain.calls_by("worker"))


def test_a_summary_the_checks_cut_to_almost_nothing_falls_back_to_its_checked_claims():
    text = book((1, STORY), paragraphs=12)
    segments = parts_of(text, question=None)
    invented = ("The main people in the document are: John Smith, Jane Doe and Michael Brown. John Smith met Jane "
                "Doe in 1986. Michael Brown and Sarah Wilson left for Boston.")
    model = MockModel(replies={"worker": summary_worker(segments), "manager": invented})
    result = Reader(text, model=model, window=WINDOW, strategy="chain").summarize()
    check = result.extras["trace"]["summary_check"]
    assert check["retried"] and check["extractive"]
    assert "Ada Varn saved the steamer Otter." in result.text and "Smith" not in result.text
    assert grounding_unsupported(result.text, text) == []  # every name and number is the story's


def grounding_unsupported(summary: str, text: str) -> list[str]:
    from longread import grounding

    return grounding.unsupported_entities(summary, text)
