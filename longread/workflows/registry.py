"""Strategies by name: `get_strategy("multipath:paths=5")`, `register_strategy(name, factory)`.

A spec is a name, optionally followed by `:` and comma-separated options (`key=value`; a bare value sets the
strategy's first option, so `multipath:5` is `multipath:paths=5`). Values are parsed as int, float or bool
where they look like one. Plugins register more strategies here (entry points, see docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..errors import StrategyError
from .base import Strategy

Factory = Callable[..., Strategy]
_STRATEGIES: dict[str, Factory] = {}
_HELP: dict[str, str] = {}


def register_strategy(name: str, factory: Factory, help: str | None = None) -> None:
    """Make `name` a strategy: `factory(**options)` returns a Strategy."""
    _STRATEGIES[name] = factory
    _HELP[name] = help or ((factory.__doc__ or "").strip().splitlines() or [""])[0]


def available_strategies() -> dict[str, str]:
    """Every registered strategy name with its one-line description."""
    return dict(_HELP)


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec: str) -> tuple[str, dict[str, Any], list[Any]]:
    name, _, rest = spec.strip().partition(":")
    options: dict[str, Any] = {}
    positional: list[Any] = []
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if eq:
            options[key.strip().replace("-", "_")] = _value(value)
        else:
            positional.append(_value(key))
    return name, options, positional


def get_strategy(spec: "str | Strategy | None" = None, **options: Any) -> Strategy:
    """The strategy for a spec (default `chain`); a Strategy passes through unchanged."""
    if isinstance(spec, Strategy):
        return spec
    name, parsed, positional = parse_spec(spec or DEFAULT_STRATEGY)
    factory = _STRATEGIES.get(name)
    if factory is None:
        known = ", ".join(sorted(_STRATEGIES))
        raise StrategyError(f"unknown strategy {name!r}: choose one of {known}")
    if positional:
        fields = [f.name for f in dataclasses.fields(factory)] if dataclasses.is_dataclass(factory) else []
        if len(positional) > len(fields):
            raise StrategyError(f"strategy {spec!r}: too many values")
        parsed = {**dict(zip(fields, positional)), **parsed}
    try:
        return factory(**{**parsed, **options})
    except StrategyError:
        raise
    except (TypeError, ValueError) as exc:  # an unknown option, or a value the strategy refuses
        raise StrategyError(f"strategy {spec!r}: {exc}") from exc


def _register_builtins() -> None:
    from .auto import AutoStrategy
    from .chain import ChainStrategy
    from .full import FullStrategy
    from .multipath import MultipathStrategy
    from .rag import RagStrategy
    from .truncate import TruncateStrategy

    register_strategy("chain", ChainStrategy, "Chain-of-Agents: workers read the segments in order, a manager answers")
    register_strategy("lookback", lambda **o: ChainStrategy(**{"lookback": True, **o}),
                      "chain, and the manager re-reads the source passages the notes cite")
    register_strategy("multipath", MultipathStrategy, "chains over several reading orders, then a judge")
    register_strategy("rag", RagStrategy, "baseline: the best ~300-token chunks for the question, one call")
    register_strategy("truncate", TruncateStrategy, "baseline: the head and tail that fit the window, one call")
    register_strategy("full", FullStrategy, "baseline: the whole document in one call of the model's context")
    register_strategy("auto", AutoStrategy, "retrieval first; the whole document only when retrieval cannot answer")


DEFAULT_STRATEGY = "auto"  # what docs/quality.md measured to read best (retrieval, then the chain)
_register_builtins()
