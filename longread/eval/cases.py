"""The case format of `longread eval`: one JSON object a line in a `cases.jsonl` file.

    {"id": "quality-03-07", "dataset": "quality", "path": "documents/quality-03.txt",
     "question": "Why does Korvin ...?", "choices": {"A": "...", "B": "...", "C": "...", "D": "..."}, "answer": "B",
     "metadata": {"kind": "choice"}}

Fields:
- `id` (required, unique in the file) and `dataset` (required: the column of the report it is counted in);
- the document: `path` (relative to the folder of cases.jsonl, or absolute) or inline `text`, exactly one;
- `question`: the question, or null (or absent) for a summary of the whole document;
- the gold, exactly one of: `answers` (a list of acceptable short answers), `choices` ({letter: text}) with
  `answer` (the gold letter), `references` (reference summaries; the best match counts), `items` (every value a
  list question must name: scored by F1 of the values listed) or `count` (the number a counting question must
  give: scored by exact count);
- `metadata`: free (needle cases carry `length`, `depth`, `kind`; the report plots what it finds).

A case's task follows from its gold: `choice` (choices), `truefalse` (answers that are all "true"/"false"),
`summary` (references), `list` (items), `count` (count), else `short`. `longread.eval.metrics.score` scores each task its own way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from ..documents import Document, load_document
from ..errors import LongreadError

Task = Literal["choice", "truefalse", "summary", "list", "count", "short"]
_TRUTH = {"true", "false"}


class CaseError(LongreadError):
    """A cases file that cannot be used; the message names the file, the line and the reason."""


@dataclass(frozen=True)
class Case:
    id: str
    dataset: str
    question: str | None = None
    path: str | None = None
    text: str | None = None
    answers: tuple[str, ...] = ()
    choices: dict[str, str] | None = None
    answer: str | None = None
    references: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    count: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    base: Path | None = field(default=None, compare=False)  # the folder a relative `path` is relative to

    @property
    def task(self) -> Task:
        if self.choices:
            return "choice"
        if self.references:
            return "summary"
        if self.items:
            return "list"
        if self.count is not None:
            return "count"
        if self.answers and all(a.strip().lower() in _TRUTH for a in self.answers):
            return "truefalse"
        return "short"

    @property
    def document_path(self) -> Path | None:
        if self.path is None:
            return None
        path = Path(self.path).expanduser()
        return path if path.is_absolute() or self.base is None else self.base / path

    @property
    def document_key(self) -> str:
        """Cases with the same key read the same document (the runner loads each once)."""
        return f"path:{self.document_path}" if self.path is not None else f"text:{self.id}"

    def load_document(self) -> Document:
        if self.path is not None:
            return load_document(self.document_path)  # type: ignore[arg-type]
        return Document.from_text(self.text or "", title=self.id, source=f"case {self.id}")

    @property
    def gold(self) -> Any:
        """What a correct answer matches, as it goes into the results file."""
        if self.task == "choice":
            return self.answer
        if self.task == "summary":
            return list(self.references)
        if self.task == "list":
            return list(self.items)
        if self.task == "count":
            return self.count
        return list(self.answers)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "dataset": self.dataset}
        if self.path is not None:
            data["path"] = self.path
        else:
            data["text"] = self.text
        data["question"] = self.question
        if self.choices:
            data["choices"] = dict(self.choices)
            data["answer"] = self.answer
        elif self.references:
            data["references"] = list(self.references)
        elif self.items:
            data["items"] = list(self.items)
        elif self.count is not None:
            data["count"] = self.count
        else:
            data["answers"] = list(self.answers)
        data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: Any, base: Path | None = None) -> "Case":
        """A case from its JSON object; ValueError names the first thing wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"a case is a JSON object, not {type(data).__name__}")
        unknown = set(data) - _FIELDS
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_FIELDS))})")
        case_id, dataset = data.get("id"), data.get("dataset")
        for name, value in (("id", case_id), ("dataset", dataset)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"`{name}` must be a non-empty string")
        if ("path" in data) == ("text" in data):
            raise ValueError("give exactly one of `path` (the document's file) and `text` (the document inline)")
        if "path" in data and not (isinstance(data["path"], str) and data["path"].strip()):
            raise ValueError("`path` must be a non-empty string")
        if "text" in data and not (isinstance(data["text"], str) and data["text"].strip()):
            raise ValueError("`text` must be a non-empty string")
        question = data.get("question")
        if question is not None and not (isinstance(question, str) and question.strip()):
            raise ValueError("`question` must be a non-empty string, or null for a summary")
        golds = [name for name in ("answers", "choices", "references", "items", "count") if data.get(name) is not None]
        if len(golds) != 1:
            raise ValueError("give exactly one of `answers`, `choices` (with `answer`), `references`, `items` and "
                             "`count`")
        answers = _strings(data, "answers")
        references = _strings(data, "references")
        items = _strings(data, "items")
        count = data.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise ValueError("`count` must be a whole number, 0 or more")
        if (items or count is not None) and question is None:
            raise ValueError("a list or count case needs a `question`")
        choices = data.get("choices")
        answer = data.get("answer")
        if choices is not None:
            if not isinstance(choices, dict) or not choices or not all(
                isinstance(k, str) and len(k) == 1 and k.isalpha() and isinstance(v, str) for k, v in choices.items()
            ):
                raise ValueError("`choices` must map single letters to option texts, e.g. {\"A\": \"...\"}")
            choices = {k.upper(): v for k, v in choices.items()}
            if not isinstance(answer, str) or answer.upper() not in choices:
                raise ValueError(f"`answer` must be one of the letters of `choices` ({', '.join(choices)})")
            answer = answer.upper()
            if question is None:
                raise ValueError("a multiple-choice case needs a `question`")
        elif answer is not None:
            raise ValueError("`answer` (a letter) goes with `choices`; short answers go in `answers`")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError("`metadata` must be an object")
        return cls(
            id=case_id, dataset=dataset, question=question, path=data.get("path"), text=data.get("text"),
            answers=answers, choices=choices, answer=answer, references=references, items=items, count=count,
            metadata=metadata, base=base,
        )


_FIELDS = {"id", "dataset", "path", "text", "question", "answers", "choices", "answer", "references", "items", "count",
           "metadata"}


def _strings(data: dict[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"`{name}` must be a non-empty list of non-empty strings")
    return tuple(value)


def load_cases(path: str | Path) -> list[Case]:
    """Every case of a cases.jsonl file, in order. CaseError names the file, the line and the reason."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CaseError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise CaseError(f"{file}: is a directory, not a cases file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"{file}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    base = file.resolve().parent
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = Case.from_dict(json.loads(line), base)
        except json.JSONDecodeError as exc:
            raise CaseError(f"{file} line {number}: not JSON ({exc.msg})") from None
        except ValueError as exc:
            raise CaseError(f"{file} line {number}: {exc}") from None
        if case.id in seen:
            raise CaseError(f"{file} line {number}: case id {case.id!r} already used on line {seen[case.id]}")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise CaseError(f"{file}: no cases in it")
    return cases


def write_cases(path: str | Path, cases: Iterable[Case]) -> int:
    """Writes the cases one a line (UTF-8, unescaped); returns how many."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with file.open("w", encoding="utf-8") as out:
        for case in cases:
            out.write(json.dumps(case.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count
