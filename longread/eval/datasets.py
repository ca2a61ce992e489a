"""Loaders that turn published long-document sets into cases (see cases.py), with each document written once.

- `quality`: L-Eval's QuALITY file (`input` = the article, `instructions[]` = questions with options (A)-(D),
  `outputs[]` = "(B) the option's text"): multiple choice.
- `sci_fi`: L-Eval's sci-fi file (same fields; `outputs[]` = "True [fact: False]"): true/false. The gold is the
  first word, the answer in the world of the story (which the question asks for: "based on the world described
  in the document"); the real-world fact after it goes to `metadata.fact`.
- `squality`: SQuALITY (`document`, `questions[].question_text`, `questions[].responses[].response_text`):
  question-focused summaries scored against the four references.
- `squality_summary`: the same file as whole-document summaries: one case per story, no question (the strategy
  summarizes), scored against the four references of its first question, "What is the plot of the story?".
- `longbench_v2`: the LongBench v2 multiple-choice lines `{id, book, question, choices{A..D}, answer}`, whose
  `book` path is relative to the data folder; the cases reference the book where it lies instead of copying it.

`build_dataset(name, source, out_dir)` writes OUT/cases.jsonl and, for the sets that carry documents inline,
OUT/documents/<document id>.txt (one file per document, however many questions it has).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from .cases import Case, CaseError, write_cases

Loader = Callable[[Path], Iterator[tuple[Case, str | None]]]  # (case, inline document text to write, or None)

# "(A) text" options after the question; QuALITY writes them on their own lines, " (A) ...".
_OPTION = re.compile(r"(?:^|\n)\s*\(([A-Z])\)\s*")
_NUMBERING = re.compile(r"^\s*\d+[.)]\s*")
_TRUE_FALSE = re.compile(r"^\s*(true|false)\b", re.IGNORECASE)
_FACT = re.compile(r"\[fact:\s*(true|false)\s*\]", re.IGNORECASE)
SCI_FI_ASK = "True or False? Answer this question based on the world described in the document."


def _records(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CaseError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CaseError(f"{file}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CaseError(f"{file} line {number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise CaseError(f"{file} line {number}: expected a JSON object")
            yield number, record


def _field(file: Path, number: int, record: dict[str, Any], name: str, kind: type) -> Any:
    value = record.get(name)
    if not isinstance(value, kind):
        raise CaseError(f"{file} line {number}: field `{name}` missing or not a {kind.__name__}")
    return value


def _title(text: str) -> str:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return " ".join(first.split())[:80]


def split_options(instruction: str) -> tuple[str, dict[str, str]]:
    """QuALITY's "question\\n\\n (A) ...\\n (B) ..." -> (question, {letter: option text})."""
    marks = list(_OPTION.finditer(instruction))
    if not marks:
        return instruction.strip(), {}
    question = instruction[: marks[0].start()].strip()
    choices = {}
    for mark, following in zip(marks, marks[1:] + [None]):
        end = following.start() if following else len(instruction)
        choices[mark.group(1)] = " ".join(instruction[mark.end() : end].split())
    return question, choices


def load_quality(file: Path) -> Iterator[tuple[Case, str | None]]:
    for number, record in _records(file):
        article = number - 1
        text = _field(file, number, record, "input", str)
        instructions = _field(file, number, record, "instructions", list)
        outputs = _field(file, number, record, "outputs", list)
        if len(instructions) != len(outputs):
            raise CaseError(f"{file} line {number}: {len(instructions)} instructions but {len(outputs)} outputs")
        document = f"quality-{article:02d}"
        for q, (instruction, output) in enumerate(zip(instructions, outputs)):
            question, choices = split_options(instruction)
            gold = re.match(r"\s*\(?([A-Z])\)", output or "")
            if len(choices) < 2 or gold is None or gold.group(1) not in choices:
                raise CaseError(f"{file} line {number}: question {q + 1} has no (A)-(D) options or no gold letter")
            case = Case(
                id=f"{document}-{q:02d}", dataset="quality", question=question, path=f"documents/{document}.txt",
                choices=choices, answer=gold.group(1),
                metadata={"document": document, "title": _title(text), "source": record.get("source", "")},
            )
            yield case, text


def load_sci_fi(file: Path) -> Iterator[tuple[Case, str | None]]:
    for number, record in _records(file):
        story = number - 1
        text = _field(file, number, record, "input", str)
        instructions = _field(file, number, record, "instructions", list)
        outputs = _field(file, number, record, "outputs", list)
        if len(instructions) != len(outputs):
            raise CaseError(f"{file} line {number}: {len(instructions)} instructions but {len(outputs)} outputs")
        document = f"sci_fi-{story:02d}"
        for q, (instruction, output) in enumerate(zip(instructions, outputs)):
            gold = _TRUE_FALSE.match(output or "")
            if gold is None:
                raise CaseError(f"{file} line {number}: output {q + 1} is not True/False: {output!r}")
            question = _NUMBERING.sub("", instruction).strip()
            if "true or false" not in question.lower():  # two questions of the file lack the ask
                question = f"{question.rstrip('.')}, {SCI_FI_ASK}"
            fact = _FACT.search(output)
            metadata = {"document": document, "title": _title(text)}
            if fact:
                metadata["fact"] = fact.group(1).capitalize()
            yield Case(
                id=f"{document}-{q:02d}", dataset="sci_fi", question=question, path=f"documents/{document}.txt",
                answers=(gold.group(1).capitalize(),), metadata=metadata,
            ), text


def load_squality(file: Path) -> Iterator[tuple[Case, str | None]]:
    for number, record in _records(file):
        text = _field(file, number, record, "document", str)
        questions = _field(file, number, record, "questions", list)
        meta = record.get("metadata") or {}
        document = f"squality-{meta.get('passage_id') or number - 1}"
        for q, item in enumerate(questions):
            question = (item or {}).get("question_text")
            references = tuple(r.get("response_text", "") for r in (item or {}).get("responses") or [])
            references = tuple(r for r in references if isinstance(r, str) and r.strip())
            if not isinstance(question, str) or not question.strip() or not references:
                raise CaseError(f"{file} line {number}: question {q + 1} has no question_text or no responses")
            yield Case(
                id=f"{document}-{item.get('question_number', q + 1)}", dataset="squality", question=question.strip(),
                path=f"documents/{document}.txt", references=references,
                metadata={"document": document, "title": _title(text)},
            ), text


def load_squality_summary(file: Path) -> Iterator[tuple[Case, str | None]]:
    seen: set[str] = set()
    for case, text in load_squality(file):
        document = case.metadata["document"]
        if document in seen:
            continue  # the first question of a story is its plot
        seen.add(document)
        yield Case(id=f"{document}-summary", dataset="squality_summary", path=case.path, references=case.references,
                   metadata={**case.metadata, "references_of": case.question}), text


def load_longbench_v2(file: Path) -> Iterator[tuple[Case, str | None]]:
    for number, record in _records(file):
        book = _field(file, number, record, "book", str)
        choices = _field(file, number, record, "choices", dict)
        # The books lie in the data folder, one level above the file (`qa/longbench_v2_books.jsonl`).
        found = next((p for p in (file.parent / book, file.parent.parent / book) if p.is_file()), None)
        if found is None:
            raise CaseError(f"{file} line {number}: book {book} not found beside the file or in its parent folder")
        yield Case(
            id=f"longbench_v2-{_field(file, number, record, 'id', str)}", dataset="longbench_v2",
            question=_field(file, number, record, "question", str), path=str(found.resolve()),
            choices={k.upper(): str(v) for k, v in choices.items()}, answer=str(record.get("answer", "")).upper(),
            metadata={"document": Path(book).stem, "difficulty": record.get("difficulty", "")},
        ), None


LOADERS: dict[str, Loader] = {
    "quality": load_quality,
    "sci_fi": load_sci_fi,
    "squality": load_squality,
    "squality_summary": load_squality_summary,
    "longbench_v2": load_longbench_v2,
}


def build_dataset(name: str, source: str | Path, out_dir: str | Path) -> tuple[Path, int, int]:
    """Writes OUT/cases.jsonl (and OUT/documents/); returns (cases file, cases, documents written)."""
    if name not in LOADERS:
        raise CaseError(f"unknown dataset {name!r} (known: {', '.join(LOADERS)})")
    source, out = Path(source), Path(out_dir)
    if not source.is_file():
        raise CaseError(f"{source}: no such file")
    cases: list[Case] = []
    written: set[str] = set()
    for case, text in LOADERS[name](source):
        if text is not None and case.path not in written:
            target = out / case.path  # type: ignore[operator]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.add(case.path)  # type: ignore[arg-type]
        cases.append(replace(case, base=out))
    target = out / "cases.jsonl"
    write_cases(target, cases)
    return target, len(cases), len(written)
