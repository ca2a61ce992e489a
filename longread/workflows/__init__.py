"""Ways of reading a document, one module each behind one strategy protocol (base.py), found by name
(registry.py): chain (Chain-of-Agents) and lookback, multipath, auto (Self-Route), and the baselines rag,
truncate and full; chat.py is one Self-Controlled Memory session. The graphs are LangGraph's.

The registry's names are imported here; the protocol's (ReadingContext, Strategy) on first use, so that naming
the strategies imports no strategy, agent or graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import DEFAULT_STRATEGY, available_strategies, get_strategy, parse_spec, register_strategy

__all__ = [
    "DEFAULT_STRATEGY", "ReadingContext", "Strategy", "available_strategies", "get_strategy", "parse_spec",
    "register_strategy",
]


def __getattr__(name: str) -> Any:
    if name in ("ReadingContext", "Strategy"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module 'longread.workflows' has no attribute {name!r}")


if TYPE_CHECKING:
    from .base import ReadingContext, Strategy
