"""Typed results of a read: the answer or summary, citations, per-call records and usage totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class CallRecord:
    agent: Literal["worker", "manager", "controller"]
    segment: int | None
    prompt_tokens: int
    completion_tokens: int
    max_new_tokens: int
    seconds: float
    cost_usd: float = 0.0
    cached_prompt_tokens: int = 0
    passed_on: bool = False  # a worker that found nothing and passed the previous notes on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Citation:
    segment: int
    start: int
    end: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    calls: int = 0
    cached_prompt_tokens: int = 0

    @classmethod
    def of(cls, calls: list[CallRecord]) -> "Usage":
        return cls(
            prompt_tokens=sum(c.prompt_tokens for c in calls),
            completion_tokens=sum(c.completion_tokens for c in calls),
            cost_usd=sum(c.cost_usd for c in calls),
            seconds=sum(c.seconds for c in calls),
            calls=len(calls),
            cached_prompt_tokens=sum(c.cached_prompt_tokens for c in calls),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Result:
    mode: Literal["query", "summary"]
    text: str
    question: str | None
    citations: list[Citation]
    segments: int
    calls: list[CallRecord]
    window: int
    model: str
    source: str
    title: str
    notes: str = ""  # the final communication unit the manager read
    document_tokens: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return self.text

    @property
    def summary(self) -> str:
        return self.text

    @property
    def usage(self) -> Usage:
        return Usage.of(self.calls)

    def to_dict(self) -> dict[str, Any]:
        """The --json object of DESIGN.md."""
        key = "summary" if self.mode == "summary" else "answer"
        data: dict[str, Any] = {
            "source": self.source,
            "title": self.title,
            "model": self.model,
            "mode": self.mode,
            key: self.text,
            "citations": [c.to_dict() for c in self.citations],
            "segments": self.segments,
            "document_tokens": self.document_tokens,
            "calls": [c.to_dict() for c in self.calls],
            "usage": self.usage.to_dict(),
            "window": self.window,
        }
        if self.question is not None:
            data["question"] = self.question
        if self.extras:
            data.update(self.extras)
        return data
