"""The names `--strategy` accepts, for its help text and its check: the registry's, and installed plugins'.

Plugins (entry points `longread.strategies`) are registered into `longread.workflows` when a run needs them
(`install_plugin_strategies`); listing their names reads package metadata only.
"""

from __future__ import annotations

from .. import plugins

BUILTIN = ("chain",)


def strategy_names() -> list[str]:
    names = list(BUILTIN)
    names += [name for name in plugins.installed(plugins.STRATEGIES) if name not in names]
    return names


def describe_strategies() -> dict[str, str]:
    """Every strategy with its one-line description (this imports the workflows)."""
    described = {name: "" for name in strategy_names()}
    try:
        from ..workflows import available_strategies
    except ImportError:
        return described
    described.update(available_strategies())
    for name, entry in plugins.installed(plugins.STRATEGIES).items():
        described.setdefault(name, f"plugin ({entry.value})")
    return described
