"""The rule and the map of docs/architecture.md, checked on the source: imports go down the layers, never up; no module imports
another that imports it back (directly or round a loop, inside functions too); only the application (cli/) writes
to a terminal (rich, typer). Read from the code's import statements (ast), so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "longread"

MAP = PACKAGE.parent / "docs" / "architecture.md"


def map_block(heading: str) -> list[str]:
    """The lines of the first code block under `heading` in docs/architecture.md."""
    text = MAP.read_text(encoding="utf-8")
    after = text[text.index(f"\n{heading}\n"):]
    start = after.index("```\n") + 4
    return after[start:after.index("```", start)].splitlines()


def map_layers() -> tuple[tuple[str, ...], ...]:
    """The layers as docs/architecture.md's rule draws them, lowest first: `N  module module ...  what they are`."""
    rows = []
    for line in map_block("### The rule")[1:]:
        number, rest = line.split(maxsplit=1)
        modules = rest.split("  ")[0].split()  # two spaces end the list of modules
        rows.append((int(number), tuple(modules)))
    assert [n for n, _ in sorted(rows)] == list(range(len(rows)))
    return tuple(modules for _, modules in sorted(rows))


# Lowest first: a module may import from its own layer or one below, never from one above.
LAYERS = map_layers()
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
LAYER["longread"] = LAYER["cli"]  # the package's facade (__init__.py) names everything, on first use: on top too
PRESENTATION = ("rich", "typer", "click")  # what draws on a terminal or parses a command line


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(the absolute module name, line) of every import of `path` at run time: top level or inside a function;
    not those under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = []
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def known(name: str, modules: set[str]) -> str | None:
    """The longread module `name` is or lies in (`from . import x` names the module x, or an attribute of .)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def edges() -> dict[str, set[tuple[str, int]]]:
    graph: dict[str, set[tuple[str, int]]] = {}
    for name, path in MODULES.items():
        for target, line in imports(path):
            found = known(target, set(MODULES)) if target.startswith("longread") else None
            if found is not None and found != name:
                graph.setdefault(name, set()).add((found, line))
    return graph


def top(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_top_level_module_has_a_layer():
    assert {top(m) for m in MODULES if m != "longread"} <= set(LAYER)


def test_imports_go_down_the_layers_never_up():
    upward = [f"{source}:{line} imports {target}"
              for source, targets in edges().items() if source != "longread"  # the facade names all, lazily
              for target, line in targets if LAYER[top(target)] > LAYER[top(source)]]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    graph = {source: {t for t, _ in targets if t != "longread"} for source, targets in edges().items()
             if source != "longread"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("library", sorted({top(m) for m in MODULES} - {"cli", "__main__", "longread"}))
def test_only_the_application_writes_to_a_terminal(library):
    drawing = [f"{name}:{line} imports {target}" for name, path in MODULES.items() if top(name) == library
               for target, line in imports(path) if target.split(".")[0] in PRESENTATION]
    assert drawing == []


def map_tree() -> list[str]:
    """The paths docs/architecture.md's module tree names (`agents/claims.py`, `agents/`), from its indentation."""
    lines = map_block("### Modules")
    assert lines[0] == "longread/"
    paths, parents = [], []
    for line in lines[1:]:
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        parents = parents[:depth - 1]
        paths.append("/".join(parents + [name.rstrip("/")]) + ("/" if name.endswith("/") else ""))
        if name.endswith("/"):
            parents.append(name.rstrip("/"))
    return paths


def test_the_map_names_every_module_once_and_nothing_else():
    named = map_tree()
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" or p.parent == PACKAGE}
    modules |= {str(p.parent.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE}
    assert sorted(set(named)) == sorted(named), "a module named twice"
    assert sorted(modules - set(named)) == [], "modules the map does not name"
    assert sorted(set(named) - modules) == [], "the map names modules that do not exist"


def test_every_module_path_the_map_mentions_exists():
    """`cli/run/runner.py`, `kv/static.py`, `tests/test_faults.py`: each module path written in backquotes is there
    (relative to the repository, the package, or the package's backends/ or cli/)."""
    import re

    root = PACKAGE.parent
    missing = []
    for path in re.findall(r"`([\w.-]+/[\w./-]*\.py)`", MAP.read_text(encoding="utf-8")):
        if not any((base / path).exists() for base in (root, PACKAGE, PACKAGE / "backends", PACKAGE / "cli")):
            missing.append(path)
    assert missing == []
