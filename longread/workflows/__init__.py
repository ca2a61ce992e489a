"""Ways of reading a document, one module each behind one strategy protocol (base.py), found by name
(registry.py): chain (Chain-of-Agents) and lookback, multipath, auto (Self-Route), and the baselines rag,
truncate and full; chat.py is one Self-Controlled Memory session. The graphs are LangGraph's."""

from .base import ReadingContext, Strategy
from .registry import DEFAULT_STRATEGY, available_strategies, get_strategy, parse_spec, register_strategy

__all__ = [
    "DEFAULT_STRATEGY", "ReadingContext", "Strategy", "available_strategies", "get_strategy", "parse_spec",
    "register_strategy",
]
