"""One line of an eval results file: one case read under one setting, and how it scored.

`longread eval` writes an `EvalRecord` per case per setting (`to_dict`, one JSON object a line) and every reader
of results files (resume, `longread eval report`, the progress display, benchmarks/) reads it back with
`from_dict`. The JSON keys and their order are those docs/evaluation.md ("The results file") lists; a line written
before a field existed (`gpu_peak_bytes`, `extras`) reads with that field's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Without these a line cannot be resumed or reported: they are the case and the setting it belongs to.
REQUIRED_FIELDS = ("case", "dataset", "strategy", "model", "window")
# Written `null` by hand or by an old tool: read as empty, as the readers always took them.
_EMPTY_WHEN_NULL = {"metrics": dict, "calls": list, "usage": dict, "extras": dict, "metadata": dict}


class NotARecord(ValueError):
    """A JSON object that lacks a field every results line has (see REQUIRED_FIELDS)."""


@dataclass
class EvalRecord:
    # the case
    case: str
    dataset: str
    task: str
    # the setting
    strategy: str
    model: str
    window: int
    kv: str | None = None
    # the outcome
    score: float | None = None  # the task's main metric, 0..1; None when the case failed
    metrics: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)  # CallRecord.to_dict() of every model call
    usage: dict[str, Any] = field(default_factory=dict)  # Usage.to_dict(): the calls' totals
    seconds: float = 0.0
    document_tokens: int | None = None
    segments: int | None = None
    error: str | None = None  # "Type: one-line message" of a failed case
    gpu_peak_bytes: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # the strategy's Result.extras; written only when set
    # for reading the results without the cases file
    question: str | None = None
    gold: Any = None
    model_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    finished_at: str | None = None

    @property
    def key(self) -> tuple:
        """(dataset, case, strategy, model, window, kv): one case under one setting. A later line of the same
        key replaces an earlier one (a retried failure)."""
        return (self.dataset, self.case, self.strategy, self.model, self.window, self.kv)

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def scored(self) -> bool:
        return not self.failed and self.score is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the line, its keys in the order of the fields."""
        data = asdict(self)
        if not self.extras:
            del data["extras"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalRecord":
        """The record of a line; NotARecord when it lacks one of REQUIRED_FIELDS. Keys this version does not know
        are left out."""
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        if missing:
            raise NotARecord(f"has no {', '.join(repr(name) for name in missing)}")
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        values.setdefault("task", "")
        for name, empty in _EMPTY_WHEN_NULL.items():
            if values.get(name) is None:
                values[name] = empty()
        return cls(**values)
