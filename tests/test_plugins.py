"""Extension by installed packages: a document loader, a model backend, a KV policy and a strategy, each found
through its entry point the way `pip install` leaves it (a *.dist-info folder on the path), with no code change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from longread import plugins
from longread.errors import DocumentError, StrategyError

PLUGIN = '''
import codecs
import json
import os
from types import SimpleNamespace

from longread.backends import Backend, ModelRow
from longread.testing import MockModel
from longread.workflows.truncate import TruncateStrategy


def load_rot13(path):
    """Files of rot13 text."""
    return codecs.decode(path.read_text(), "rot13")


def echo(model, **options):
    """Answers ECHO, routed by role; writes what each call read to $LONGREAD_TESTPLUGIN_PROMPTS, for the test."""
    def reply(call):
        with open(os.environ["LONGREAD_TESTPLUGIN_PROMPTS"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"agent": call.agent, "prompt": call.prompt}) + "\\n")
        return "ECHO"
    return MockModel(name=model, replies={"reader": reply, "manager": reply})


backend = Backend("echo", echo, "echo: a test backend", rows=lambda: [ModelRow("echo", "echo", "a test backend")])


def keepall(*args):
    if args:
        raise TypeError("keepall takes no arguments")
    return SimpleNamespace(name="keepall")


class FirstPart(TruncateStrategy):
    """the head and tail that fit, under another name"""
    name = "firstpart"


def broken(path):
    raise RuntimeError("this loader always fails")
'''

ENTRY_POINTS = """
[longread.loaders]
rot13 = longread_testplugin:load_rot13
bad = longread_testplugin:broken
missing = longread_testplugin_nowhere:load

[longread.backends]
echo = longread_testplugin:backend

[longread.kv_policies]
keepall = longread_testplugin:keepall

[longread.strategies]
firstpart = longread_testplugin:FirstPart
"""


@pytest.fixture
def site(tmp_path) -> Path:
    """What `pip install longread-testplugin` would leave in site-packages."""
    root = tmp_path / "site"
    (root / "longread_testplugin").mkdir(parents=True)
    (root / "longread_testplugin" / "__init__.py").write_text(PLUGIN)
    info = root / "longread_testplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: longread-testplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def test_installed_plugins_extend_every_registry_in_a_fresh_process(site, tmp_path):
    from .test_cli import long_text

    import codecs

    secret = tmp_path / "harbour.rot13"

    secret.write_text(codecs.encode(long_text(6), "rot13"))
    script = textwrap.dedent(f"""
        import json
        from typer.testing import CliRunner
        from longread.cli import app
        runner = CliRunner()
        def run(*args):
            result = runner.invoke(app, list(args))
            return {{"code": result.exit_code, "out": result.stdout, "err": result.stderr}}
        print(json.dumps({{
            "help": run("ask", "--help"),
            "models": run("models", "--json"),
            "strategies": run("strategies", "--json"),
            "ask": run("ask", {str(secret)!r}, "How many boats?", "--model", "echo", "--kv", "keepall",
                       "--strategy", "firstpart", "--json", "--window", "1024"),
            "chain": run("ask", {str(secret)!r}, "How many boats?", "--model", "echo", "--json", "--window", "1024"),
        }}))
    """)
    prompts = tmp_path / "prompts.jsonl"
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "300", "LONGREAD_TESTPLUGIN_PROMPTS": str(prompts),
           "LONGREAD_WORKSPACE": str(tmp_path / "workspace"), "LONGREAD_CONFIG": str(tmp_path / "config.toml")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert "keepall:..." in out["help"]["out"] and "firstpart" in out["help"]["out"]  # --kv and --strategy help
    assert "echo" in [json.loads(line)["model"] for line in out["models"]["out"].splitlines()]
    assert "firstpart" in [json.loads(line)["strategy"] for line in out["strategies"]["out"].splitlines()]
    asked = json.loads(out["ask"]["out"])
    assert out["ask"]["code"] == 0, out["ask"]
    assert asked["answer"] == "ECHO" and asked["model"] == "echo" and asked["strategy"] == "firstpart"
    read = [json.loads(line) for line in prompts.read_text(encoding="utf-8").splitlines()]
    assert len(asked["calls"]) == 1 and read[0]["agent"] == "reader"
    assert "harbour" in read[0]["prompt"] and codecs.encode("harbour", "rot13") not in read[0]["prompt"]  # decoded
    chained = json.loads(out["chain"]["out"])
    assert chained["strategy"] == "chain:notes=rewrite" and chained["answer"].startswith("ECHO")


def test_a_broken_plugin_fails_the_file_that_needs_it_with_a_clear_reason(site, tmp_path, monkeypatch):
    from longread import documents

    monkeypatch.syspath_prepend(str(site))
    plugins.refresh()
    try:
        assert {".rot13", ".bad", ".missing"} <= set(documents.supported_extensions())
        (tmp_path / "a.bad").write_text("text")
        (tmp_path / "b.missing").write_text("text")
        with pytest.raises(DocumentError, match=r"the \.bad loader failed \(RuntimeError: this loader always fails\)"):
            documents.load_document(tmp_path / "a.bad")
        with pytest.raises(DocumentError, match=r"plugin missing = longread_testplugin_nowhere:load .*cannot be loaded"):
            documents.load_document(tmp_path / "b.missing")
        # A folder run lists the plugins' extensions.
        assert {p.name for p in documents.find_documents(tmp_path)} >= {"a.bad", "b.missing"}
    finally:
        monkeypatch.undo()
        plugins.refresh()
    assert ".rot13" not in documents.supported_extensions()


def test_a_plugin_strategy_works_from_the_library_in_a_fresh_process(site, tmp_path):
    """`longread.ask(strategy=PLUGIN)` and `get_strategy(PLUGIN)` with nothing of the command line imported or run."""
    from .test_cli import long_text

    document = tmp_path / "harbour.txt"
    document.write_text(long_text(6))
    script = textwrap.dedent(f"""
        import json, sys
        import longread
        listed = longread.available_strategies()
        strategy = longread.get_strategy("firstpart")
        result = longread.ask({str(document)!r}, "How many boats?", model="echo", strategy="firstpart", window=1024)
        print(json.dumps({{"listed": listed.get("firstpart"), "class": type(strategy).__name__,
                          "answer": result.answer, "strategy": result.strategy,
                          "cli": sorted(m for m in sys.modules if m.startswith("longread.cli"))}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(site), "LONGREAD_TESTPLUGIN_PROMPTS": str(tmp_path / "prompts.jsonl")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"listed": "plugin (longread_testplugin:FirstPart)", "class": "FirstPart", "answer": "ECHO",
                   "strategy": "firstpart", "cli": []}


def test_naming_the_strategies_imports_no_strategy_and_no_langgraph():
    """The registry lists every strategy, and the default, from its references alone (a fresh process)."""
    code = ("import sys, json; from longread.workflows.registry import DEFAULT_STRATEGY, available_strategies; "
            "names = available_strategies(); "
            "print(json.dumps([list(names), DEFAULT_STRATEGY, sorted(m for m in sys.modules if m.startswith("
            "('langgraph', 'langchain', 'longread.workflows.', 'longread.agents')))]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    names, default, imported = json.loads(done.stdout)
    assert names[:7] == ["chain", "lookback", "multipath", "rag", "truncate", "full", "auto"] and default in names
    assert imported == ["longread.workflows.registry"]


def test_a_strategy_registered_by_reference_is_imported_on_first_use(monkeypatch):
    from longread.workflows import registry

    monkeypatch.setattr(registry, "STRATEGIES", plugins.Registry("longread.test-none"))
    monkeypatch.setattr(registry, "_HELP", {})
    registry.register_strategy("head", "longread.workflows.truncate:TruncateStrategy", "the head and tail")
    assert registry.available_strategies() == {"head": "the head and tail"}
    assert type(registry.get_strategy("head")).__name__ == "TruncateStrategy"
    with pytest.raises(StrategyError, match="unknown strategy 'chain': choose one of head"):
        registry.get_strategy("chain")


def test_registry_lookups_by_reference_import_on_first_use():
    registry = plugins.Registry("longread.test-none")
    registry.register("dumps", "json:dumps")
    assert "dumps" in registry and registry.names() == ["dumps"]
    assert registry.get("dumps") is json.dumps and registry.get("nothing") is None
