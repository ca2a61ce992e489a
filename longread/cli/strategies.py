"""The names `--strategy` accepts, for its help text and its check: the registry's, and installed plugins'.

Plugins (entry points `longread.strategies`) are registered into `longread.workflows` when a run needs them
(`install_plugin_strategies`); listing their names reads package metadata only.
"""

from __future__ import annotations

from .. import plugins

# The built-in names, listed here so that `--help` does not import the workflows (langgraph takes a second);
# tests/test_plugins.py checks them against `longread.workflows.available_strategies()`.
BUILTIN = ("chain", "lookback", "multipath", "rag", "truncate", "full", "auto")


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
    install_plugin_strategies()
    described.update(available_strategies())
    return described


def install_plugin_strategies() -> None:
    """Registers each installed `longread.strategies` entry point in the workflows' registry, imported on first use."""
    from ..workflows import available_strategies, register_strategy

    known = available_strategies()
    for name, entry in plugins.installed(plugins.STRATEGIES).items():
        if name in known:
            continue

        def factory(_entry=entry, **options):
            return plugins.load_entry_point(plugins.STRATEGIES, _entry)(**options)

        register_strategy(name, factory, f"plugin ({entry.value})")
