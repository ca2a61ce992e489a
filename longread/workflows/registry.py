"""Strategies by name: `get_strategy("multipath:paths=5")`, `register_strategy(name, factory)`.

A spec is a name, optionally followed by `:` and comma-separated options (`key=value`; a bare value sets the
strategy's first option, so `multipath:5` is `multipath:paths=5`). Values are parsed as int, float or bool
where they look like one.

One registry (`STRATEGIES`, a `plugins.Registry`) holds them all: the built-ins, registered by "module:attr" and
imported on first use; those registered in this process; and installed plugins (entry points
`longread.strategies`, see docs/architecture.md), found in package metadata. So the names, their descriptions and
the default are known without importing a strategy (or LangGraph), and a plugin strategy works from
`longread.get_strategy` and `Reader(strategy=...)` with nothing else run first.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

from .. import plugins
from ..errors import StrategyError

if TYPE_CHECKING:
    from .base import Strategy

Factory = Callable[..., "Strategy"]
DEFAULT_STRATEGY = "auto"  # what docs/quality.md measured to read best (retrieval, then the chain)

STRATEGIES: plugins.Registry[Factory] = plugins.Registry(plugins.STRATEGIES)
_HELP: dict[str, str] = {}


def register_strategy(name: str, factory: Factory | str, help: str | None = None) -> None:
    """Make `name` a strategy: `factory(**options)` returns a Strategy (or "module:attr" names the factory)."""
    STRATEGIES.register(name, factory)
    if help is None and not isinstance(factory, str):
        help = ((factory.__doc__ or "").strip().splitlines() or [""])[0]
    _HELP[name] = help or ""


def available_strategies() -> dict[str, str]:
    """Every strategy name (built in, registered, installed plugins) with its one-line description; nothing is
    imported."""
    installed = plugins.installed(plugins.STRATEGIES)
    return {name: _HELP.get(name) or (f"plugin ({installed[name].value})" if name in installed else "")
            for name in STRATEGIES.names()}


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
    """The strategy for a spec (default DEFAULT_STRATEGY); a Strategy passes through unchanged."""
    if spec is not None and not isinstance(spec, str):
        from .base import Strategy

        if isinstance(spec, Strategy):
            return spec
    name, parsed, positional = parse_spec(spec or DEFAULT_STRATEGY)
    factory = STRATEGIES.get(name)  # a plugin that cannot be imported: PluginError, naming its entry point
    if factory is None:
        known = ", ".join(sorted(STRATEGIES.names()))
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


# The built-ins, by reference: imported the first time their name is used.
register_strategy("chain", "longread.workflows.chain:ChainStrategy",
                  "Chain-of-Agents: workers read the segments in order, a manager answers")
register_strategy("lookback", "longread.workflows.chain:lookback",
                  "chain, and the manager re-reads the source passages the notes cite")
register_strategy("multipath", "longread.workflows.multipath:MultipathStrategy",
                  "chains over several reading orders, then a judge")
register_strategy("rag", "longread.workflows.rag:RagStrategy",
                  "baseline: the best ~300-token chunks for the question, one call")
register_strategy("truncate", "longread.workflows.truncate:TruncateStrategy",
                  "baseline: the head and tail that fit the window, one call")
register_strategy("full", "longread.workflows.full:FullStrategy",
                  "baseline: the whole document in one call of the model's context")
register_strategy("auto", "longread.workflows.auto:AutoStrategy",
                  "retrieval first; the whole document only when retrieval cannot answer")
