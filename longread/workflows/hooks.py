"""The callbacks a strategy hangs around the chain's calls (ChainHooks), apart from the graphs that call them, so
that base.py (and the registry beside it) imports no LangGraph; and `HookedNodes`, what the chain graphs' nodes
share to call them (chain_of_agents.py, grounded_graph.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..agents import CommunicationUnit
from ..backends.base import Completion, TextCallback
from ..results import Agent, CallRecord
from ..segmenting import Segment


@dataclass
class ChainHooks:
    """Optional callbacks around the chain's calls.

    - `archive(segment, notes, passed_on)`: after each worker (the memory stream archives the notes);
    - `recall(notes)`: archived notes for the manager, as many as fit beside the last CU;
    - `lookback(notes, extra)`: (source text of cited segments that fits the manager's window, their indices);
    - `started(agent, segment)` / `finished(record)`: before and after each call (progress displays);
    - `on_text`: receives the manager's answer as it is written.
    """

    archive: Callable[[Segment, CommunicationUnit, bool], None] | None = None
    recall: Callable[[CommunicationUnit], Sequence[str]] | None = None
    lookback: Callable[[CommunicationUnit, Sequence[str]], tuple[str, list[int]]] | None = None
    started: Callable[[Agent, int | None], None] | None = None
    finished: Callable[[CallRecord], None] | None = None
    on_text: TextCallback | None = None


@dataclass
class HookedNodes:
    """What a chain graph's nodes share around their calls: the segments, the reading order, the path, the hooks;
    and the calling of the hooks (each only where it is set)."""

    segments: Sequence[Segment]
    hooks: ChainHooks
    order: list[int]  # the reading order (positions into `segments`)
    path: int | None  # multipath's path, named in the call records

    @property
    def total(self) -> int:
        return len(self.order)

    def started(self, agent: Agent, segment: int | None) -> None:
        if self.hooks.started:
            self.hooks.started(agent, segment)

    def recorded(self, agent: Agent, segment: int | None, completion: Completion, cap: int,
                 **kw: Any) -> dict[str, Any]:
        """The call's record, shown to `hooks.finished`, as the state keeps it."""
        record = CallRecord.of(agent, segment, completion, cap, path=self.path, **kw)
        if self.hooks.finished:
            self.hooks.finished(record)
        return record.to_dict()

    def shown(self, text: str) -> None:
        if self.hooks.on_text:
            self.hooks.on_text(text)
