"""The case format and the dataset loaders, on small fixture files written in the published formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longread.eval.cases import Case, CaseError, load_cases, write_cases
from longread.eval.datasets import build_dataset, split_options

from .conftest import shared_file


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -- the case format -------------------------------------------------------------------------------------------------
def test_cases_round_trip_and_tasks(tmp_path):
    cases = [
        Case(id="a", dataset="x", question="Who?", text="Ada rowed out.", answers=("Ada",), metadata={"depth": 0.5}),
        Case(id="b", dataset="x", question="Which?", path="docs/one.txt", choices={"A": "one", "B": "two"}, answer="B"),
        Case(id="c", dataset="y", path="docs/one.txt", references=("a summary", "another")),
        Case(id="d", dataset="y", question="True or False?", text="t", answers=("False",)),
    ]
    target = tmp_path / "cases.jsonl"
    assert write_cases(target, cases) == 4
    loaded = load_cases(target)
    assert [c.to_dict() for c in loaded] == [c.to_dict() for c in cases]
    assert [c.task for c in loaded] == ["short", "choice", "summary", "truefalse"]
    assert loaded[2].question is None


def test_a_relative_path_is_relative_to_the_cases_file(tmp_path, monkeypatch):
    (tmp_path / "set" / "docs").mkdir(parents=True)
    (tmp_path / "set" / "docs" / "one.txt").write_text("The lamp was lit at dusk.", encoding="utf-8")
    write_jsonl(tmp_path / "set" / "cases.jsonl",
                [{"id": "a", "dataset": "x", "path": "docs/one.txt", "question": "When?", "answers": ["dusk"]}])
    monkeypatch.chdir(tmp_path)  # elsewhere: the path still resolves beside cases.jsonl
    (case,) = load_cases("set/cases.jsonl")
    assert case.load_document().text == "The lamp was lit at dusk."
    # an inline text is a document too
    inline = Case(id="b", dataset="x", question="q", text="Inline text.", answers=("x",))
    assert inline.load_document().text == "Inline text."


@pytest.mark.parametrize("record, reason", [
    ({"dataset": "x", "text": "t", "answers": ["a"]}, "`id`"),
    ({"id": "a", "dataset": "x", "answers": ["a"]}, "exactly one of `path`"),
    ({"id": "a", "dataset": "x", "text": "t", "path": "p.txt", "answers": ["a"]}, "exactly one of `path`"),
    ({"id": "a", "dataset": "x", "text": "t"}, "exactly one of `answers`"),
    ({"id": "a", "dataset": "x", "text": "t", "answers": ["a"], "references": ["r"]}, "exactly one of `answers`"),
    ({"id": "a", "dataset": "x", "text": "t", "question": "q", "choices": {"A": "1", "B": "2"}, "answer": "C"},
     "`answer` must be one of"),
    ({"id": "a", "dataset": "x", "text": "t", "question": "q", "choices": {"AB": "1"}, "answer": "AB"}, "single letters"),
    ({"id": "a", "dataset": "x", "text": "t", "answers": []}, "non-empty list"),
    ({"id": "a", "dataset": "x", "text": "t", "answers": ["a"], "colour": "red"}, "unknown field(s) colour"),
])
def test_a_bad_case_names_the_file_the_line_and_the_reason(tmp_path, record, reason):
    good = {"id": "ok", "dataset": "x", "text": "t", "answers": ["a"]}
    path = write_jsonl(tmp_path / "cases.jsonl", [good, record])
    with pytest.raises(CaseError) as caught:
        load_cases(path)
    message = str(caught.value)
    assert message.startswith(f"{path} line 2: ") and reason in message


def test_duplicate_ids_missing_files_and_bad_json(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "dataset": "x", "text": "t", "answers": ["a"]}] * 2)
    with pytest.raises(CaseError, match="line 2: case id 'a' already used on line 1"):
        load_cases(path)
    with pytest.raises(CaseError, match="no such file"):
        load_cases(tmp_path / "absent.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(CaseError, match="bad.jsonl line 1: not JSON"):
        load_cases(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(CaseError, match="no cases"):
        load_cases(tmp_path / "empty.jsonl")


# -- loaders -----------------------------------------------------------------------------------------------------
QUALITY_STORY = "LOST IN TRANSLATION\n\nBy LARRY HARRIS\n\nThe cell had been designed for Korvin's race."


def test_quality_loader(tmp_path):
    record = {
        "instructions": [
            "Why was the door unlocked?\n\n (A) They were careless. \n (B) Their subconscious knew. \n"
            " (C) They were tired.  \n (D) He was no threat. ",
            "Who taught Korvin? \n\n (A) The Ruler \n (B) A machine \n (C) Nobody \n (D) His captors",
        ],
        "outputs": ["(B) Their subconscious knew.", "(D) His captors"],
        "input": QUALITY_STORY,
        "source": "quality_raw",
        "evaluation": "exam",
    }
    source = write_jsonl(tmp_path / "quality.jsonl", [record, {**record, "input": "Another story."}])
    target, count, documents = build_dataset("quality", source, tmp_path / "out")
    cases = load_cases(target)
    assert (count, documents, len(cases)) == (4, 2, 4)
    first = cases[0]
    assert first.question == "Why was the door unlocked?"
    assert first.choices == {"A": "They were careless.", "B": "Their subconscious knew.", "C": "They were tired.",
                             "D": "He was no threat."}
    assert first.answer == "B" and cases[1].answer == "D" and first.task == "choice"
    # two questions, one document file
    assert cases[0].path == cases[1].path != cases[2].path
    assert sorted(p.name for p in (tmp_path / "out" / "documents").iterdir()) == ["quality-00.txt", "quality-01.txt"]
    assert first.load_document().text == QUALITY_STORY
    assert first.metadata["title"] == "LOST IN TRANSLATION"


def test_split_options_keeps_parentheses_inside_an_option():
    question, choices = split_options("What? \n\n (A) one (really) \n (B) two")
    assert question == "What?" and choices == {"A": "one (really)", "B": "two"}


def test_sci_fi_loader(tmp_path):
    ask = "True or False? Answer this question based on the world described in the document."
    record = {
        "instructions": [f"1.\thumans travel to Sirius, {ask}", "9.\tPeople can not use telephones in space."],
        "outputs": ["True [fact: False]", "False [fact: True]"],
        "input": "THE QUANTUM JUMP\nBy ROBERT WICKS\nCaptain Brandon was a pioneer.",
        "evaluation": "exam", "source": "SFGram",
    }
    target, count, documents = build_dataset("sci_fi", write_jsonl(tmp_path / "sci.jsonl", [record]), tmp_path / "o")
    first, second = load_cases(target)
    assert (count, documents) == (2, 1)
    assert first.question == f"humans travel to Sirius, {ask}"  # the numbering is gone
    assert first.answers == ("True",) and first.metadata["fact"] == "False" and first.task == "truefalse"
    assert second.question.endswith(ask)  # the ask is added where the file lacks it
    assert second.answers == ("False",) and second.metadata["fact"] == "True"


def test_squality_loader(tmp_path):
    record = {
        "metadata": {"passage_id": "63833", "uid": "u", "license": "public domain"},
        "document": "Jinx Ship To The Rescue\n\nBy ALFRED COPPEL, JR.\n\nStrike commands the Aphrodite.",
        "questions": [
            {"question_text": "What is the plot of the story?", "question_number": 1,
             "responses": [{"worker_id": "6", "uid": "a", "response_text": "Strike commands a ship."},
                           {"worker_id": "7", "uid": "b", "response_text": "A faulty ship is saved."}]},
            {"question_text": "Who is Ivy?", "question_number": 2,
             "responses": [{"worker_id": "6", "uid": "c", "response_text": "The engineer."}]},
        ],
    }
    target, count, documents = build_dataset("squality", write_jsonl(tmp_path / "dev.jsonl", [record]), tmp_path / "o")
    plot, ivy = load_cases(target)
    assert (count, documents) == (2, 1)
    assert plot.id == "squality-63833-1" and plot.task == "summary"
    assert plot.references == ("Strike commands a ship.", "A faulty ship is saved.")
    assert ivy.question == "Who is Ivy?" and ivy.path == plot.path == "documents/squality-63833.txt"


def test_longbench_v2_loader_references_the_book_where_it_lies(tmp_path):
    (tmp_path / "books").mkdir()
    book = tmp_path / "books" / "story.txt"
    book.write_text("Call me Ishmael. The Albatross was the first ship we met.", encoding="utf-8")
    (tmp_path / "qa").mkdir()
    source = write_jsonl(tmp_path / "qa" / "lb.jsonl", [{
        "id": "66eb", "source": "LongBench-v2", "difficulty": "easy", "book": "books/story.txt",
        "question": "What is the first ship?", "choices": {"A": "Albatross", "B": "Rachael"}, "answer": "A",
    }])
    target, count, documents = build_dataset("longbench_v2", source, tmp_path / "out")
    (case,) = load_cases(target)
    assert (count, documents) == (1, 0)  # nothing copied
    assert Path(case.path) == book.resolve() and case.answer == "A" and case.metadata["difficulty"] == "easy"
    assert "Albatross" in case.load_document().text


def test_loader_errors_name_the_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "q.jsonl", [{"input": "x", "instructions": ["no options here"], "outputs": ["(A)"]}])
    with pytest.raises(CaseError, match=r"q.jsonl line 1: question 1 has no \(A\)-\(D\) options"):
        build_dataset("quality", bad, tmp_path / "o")
    with pytest.raises(CaseError, match="unknown dataset 'nope'"):
        build_dataset("nope", bad, tmp_path / "o")
    (tmp_path / "broken.jsonl").write_text('{"input": 1}\n', encoding="utf-8")
    with pytest.raises(CaseError, match="field `input` missing or not a str"):
        build_dataset("sci_fi", tmp_path / "broken.jsonl", tmp_path / "o")


@pytest.mark.parametrize("name, relative, questions, documents", [
    ("quality", "leval/quality.jsonl", 202, 15),
    ("sci_fi", "leval/sci_fi.jsonl", 64, 7),
    ("squality", "squality/dev.jsonl", 125, 25),
    ("longbench_v2", "qa/longbench_v2_books.jsonl", 4, 0),
])
def test_the_shared_dev_sets_load_whole(tmp_path, name, relative, questions, documents):
    source = shared_file(relative)
    target, count, written = build_dataset(name, source, tmp_path / name)
    assert (count, written) == (questions, documents)
    cases = load_cases(target)
    assert len({c.id for c in cases}) == questions


def test_list_and_count_cases_round_trip_and_are_checked():
    listed = Case.from_dict({"id": "l", "dataset": "d", "text": "t", "question": "List them.", "items": ["a", "b"]})
    counted = Case.from_dict({"id": "c", "dataset": "d", "text": "t", "question": "How many?", "count": 3})
    assert (listed.task, listed.gold, counted.task, counted.gold) == ("list", ["a", "b"], "count", 3)
    assert Case.from_dict(listed.to_dict()) == listed and Case.from_dict(counted.to_dict()) == counted
    for bad, message in (({"count": -1, "question": "q"}, "whole number"), ({"count": True, "question": "q"}, "whole"),
                         ({"items": ["a"]}, "needs a `question`"), ({"items": ["a"], "count": 1, "question": "q"},
                                                                    "exactly one")):
        with pytest.raises(ValueError, match=message):
            Case.from_dict({"id": "x", "dataset": "d", "text": "t", **bad})
