"""Typed results of a read: the answer or summary, citations, per-call records, events and usage totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

if TYPE_CHECKING:
    from .backends.base import Completion

# worker / manager / judge: the Chain-of-Agents roles (the judge compares the answers of several reading paths);
# reader: the one call of a single-call strategy (rag, truncate, full); controller: the memory controller's calls;
# formatter: the call that writes a finished answer as JSON for a schema (longread/structured.py).
Agent = Literal["worker", "manager", "judge", "reader", "controller", "formatter"]


@dataclass(frozen=True)
class CallRecord:
    agent: Agent
    segment: int | None
    prompt_tokens: int
    completion_tokens: int
    max_new_tokens: int
    seconds: float
    cost_usd: float = 0.0
    cached_prompt_tokens: int = 0
    passed_on: bool = False  # a worker that found nothing and passed the previous notes on
    reply: str = ""  # what the model answered, verbatim: why an answer came out as it did
    path: int | None = None  # the reading path (multipath) this call belongs to
    finish_reason: str = "stop"  # "stop" | "length" (the token cap cut it) | "repetition"
    cache_hit: bool = False  # answered from the completion cache: no model ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CallRecord":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def of(cls, agent: Agent, segment: int | None, completion: "Completion", max_new_tokens: int, *,
           passed_on: bool = False, path: int | None = None) -> "CallRecord":
        """The record of one finished call: the only place a Completion becomes a CallRecord."""
        return cls(
            agent=agent, segment=segment, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens, max_new_tokens=max_new_tokens,
            seconds=round(completion.seconds, 6), cost_usd=completion.cost_usd,
            cached_prompt_tokens=completion.cached_prompt_tokens, passed_on=passed_on, reply=completion.text,
            path=path, finish_reason=completion.finish_reason, cache_hit=completion.cache_hit,
        )


@dataclass(frozen=True)
class Citation:
    """Characters [start, end) of the source, and the segment (or chunk) they lie in: what an answer cites, and
    what a memory item came from (the memory calls it `Span`: one type, two names; see below)."""

    segment: int
    start: int
    end: int

    def to_dict(self) -> dict[str, int]:
        return {"segment": self.segment, "start": self.start, "end": self.end}

    @classmethod
    def of(cls, value: Any) -> "Citation":
        """One from a Citation, a {segment, start, end} mapping, a 3-tuple, or any object with those attributes;
        always of plain ints (a Citation made of numpy ints is rebuilt), so to_dict's JSON never fails."""
        if isinstance(value, Mapping):
            return cls(int(value["segment"]), int(value["start"]), int(value["end"]))
        if isinstance(value, (tuple, list)) and len(value) == 3:
            return cls(*(int(v) for v in value))
        return cls(int(value.segment), int(value.start), int(value.end))


# The memory's name for a source span (MemoryItem.spans, `from longread.memory import Span`): the same class, so a
# memory item's spans are citations as they are, with no conversion between two types of one concept.
Span = Citation


def unique_citations(spans: Sequence[Any]) -> list[Citation]:
    """Citations from anything with segment/start/end (citations, memory spans), each once, in document order."""
    unique = {(int(s.segment), int(s.start), int(s.end)) for s in spans}
    return [Citation(*span) for span in sorted(unique)]


@dataclass(frozen=True)
class ReadEvent:
    """A call of a run starting or finishing, for progress displays and logs; or (`routed`) a strategy saying which
    way it went (`message`: "retrieval answered", ...).

    `record` is None when the call starts. `path` is the reading path of a multipath run (None otherwise).
    """

    kind: Literal["call_started", "call_finished", "routed"]
    agent: Agent
    segment: int | None
    segments: int
    record: CallRecord | None
    document: str
    path: int | None = None
    message: str | None = None


ChainEvent = ReadEvent  # the name of earlier releases
EventHandler = Callable[[ReadEvent], None]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    calls: int = 0
    cached_prompt_tokens: int = 0
    cache_hits: int = 0  # calls answered from the completion cache

    @classmethod
    def of(cls, calls: Sequence[CallRecord]) -> "Usage":
        return cls(
            prompt_tokens=sum(c.prompt_tokens for c in calls),
            completion_tokens=sum(c.completion_tokens for c in calls),
            cost_usd=sum(c.cost_usd for c in calls),
            seconds=sum(c.seconds for c in calls),
            calls=len(calls),
            cached_prompt_tokens=sum(c.cached_prompt_tokens for c in calls),
            cache_hits=sum(1 for c in calls if c.cache_hit),
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
    strategy: str = "chain"
    # The answer as an object, for a question asked with a schema (longread/structured.py): a dict (or a list, ...)
    # for a JSON schema, an instance for a pydantic model. None without a schema.
    data: Any = None

    @property
    def answer(self) -> str:
        return self.text

    @property
    def summary(self) -> str:
        return self.text

    @property
    def usage(self) -> Usage:
        return Usage.of(self.calls)

    @property
    def finish_reason(self) -> str:
        """How the final text ended: "length" when its token cap cut it."""
        final = [c for c in self.calls if c.agent in ("manager", "judge", "reader")]
        return final[-1].finish_reason if final else "stop"

    def to_dict(self) -> dict[str, Any]:
        """The --json object (docs/architecture.md, "Contracts")."""
        key = "summary" if self.mode == "summary" else "answer"
        data: dict[str, Any] = {
            "source": self.source,
            "title": self.title,
            "model": self.model,
            "strategy": self.strategy,
            "mode": self.mode,
            key: self.text,
            "finish_reason": self.finish_reason,
            "citations": [c.to_dict() for c in self.citations],
            "segments": self.segments,
            "document_tokens": self.document_tokens,
            "notes": self.notes,
            "calls": [c.to_dict() for c in self.calls],
            "usage": self.usage.to_dict(),
            "window": self.window,
        }
        if self.question is not None:
            data["question"] = self.question
        if self.data is not None:
            data["data"] = self.data.model_dump(mode="json") if hasattr(self.data, "model_dump") else self.data
        if self.extras:
            data.update(self.extras)
        return data
