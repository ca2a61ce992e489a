"""The callbacks a strategy hangs around the chain's calls (ChainHooks), apart from the graphs that call them, so
that base.py (and the registry beside it) imports no LangGraph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..agents import CommunicationUnit
from ..backends.base import TextCallback
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
