"""The conventions a user of `llm`-style tools expects: --version, -h, help on no arguments, readable option types,
a settings file with aliases, the runs log, stdin and URLs, fail-fast model checks, settings recorded in outputs,
and the dry run of a local model timed instead of priced."""

from __future__ import annotations

import json
import re
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

import longread.backends
from longread import __version__
from longread.cli import app
from longread.cli.config import load_config
from longread.errors import ModelError
from longread.testing import MockModel

from .test_cli import ANSWER, QUESTION, answering_mock, long_text

PYTHON_TYPES = re.compile(r"<(bool|str|int|float|list\[[^\]]*\]|path|int range)>", re.IGNORECASE)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGREAD_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("LONGREAD_CONFIG", str(tmp_path / "config" / "config.toml"))
    monkeypatch.delenv("LONGREAD_MODEL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def built(monkeypatch):
    """Records the model strings the CLI builds, and answers with `answering_mock`."""
    names: list[str] = []

    def get_model(name, **options):
        names.append(name)
        return answering_mock()

    monkeypatch.setattr(longread.backends, "get_model", get_model)
    return names


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "harbour.txt"
    path.write_text(long_text(8))
    return path


# -- basics -----------------------------------------------------------------------------------------------------------
def test_version_and_short_help():
    assert invoke("--version").stdout.strip() == f"longread {__version__}"
    short, long = invoke("-h"), invoke("--help")
    assert short.exit_code == 0 and short.stdout == long.stdout and "summarize" in short.stdout
    assert "--install-completion" in long.stdout  # typer's shell completion


@pytest.mark.parametrize("command", ["ask", "summarize", "chat"])
def test_a_command_without_arguments_shows_its_help(command):
    result = invoke(command)  # click prints the help on stderr then (exit code 2: nothing was done)
    assert "Usage: longread " + command in result.output and "--model" in result.output
    assert "Missing argument" not in result.output


@pytest.mark.parametrize("command", ["ask", "summarize", "chat", "models", "runs", "alias", "config", "runs show",
                                     "alias set", "config set", "eval run", "eval needles", "eval report"])
def test_help_shows_option_types_as_people_read_them(command):
    text = invoke(*command.split(), "--help").stdout
    assert "Options:" in text and not PYTHON_TYPES.search(text), PYTHON_TYPES.search(text)


def test_the_command_line_replaces_no_attribute_of_typer():
    """Its conventions live in a command class given to typer (cli/command.py), not in typer's classes: importing
    longread.cli leaves every attribute of typer's command and parameter classes as typer made it."""
    import subprocess
    import sys

    code = ("import typer.core as t\n"
            "classes = (t.TyperCommand, t.TyperGroup, t.TyperArgument, t.TyperOption)\n"
            "before = [dict(vars(c)) for c in classes]\n"
            "import longread.cli\n"
            "print([f'{c.__name__}.{k}' for c, b in zip(classes, before) for k in set(vars(c)) | set(b) "
            "if vars(c).get(k) is not b.get(k)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr[-2000:]


def test_help_starts_without_importing_the_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys; from longread.cli import app\n"
            "try: app(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'litellm', 'langgraph', 'numpy', 'bs4') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]


# -- the settings file and aliases --------------------------------------------------------------------------------------
def test_alias_set_list_remove_and_use(doc, built, tmp_path):
    assert invoke("alias", "set", "fast", "mock:12").exit_code == 0
    assert load_config().aliases == {"fast": "mock:12"}
    assert invoke("alias", "list").stdout.strip() == "fast: mock:12"
    assert json.loads(invoke("alias", "list", "--json").stdout) == {"fast": "mock:12"}

    assert invoke("ask", doc, QUESTION, "--model", "fast", "--window", 1024).exit_code == 0
    assert built == ["mock:12"]  # the alias resolved before the model was built
    assert "fast" in invoke("models").stdout  # aliases are listed with the models

    assert invoke("alias", "remove", "fast").exit_code == 0
    assert load_config().aliases == {}
    bad = invoke("alias", "set", "a/b", "mock")
    assert bad.exit_code == 1 and "alias 'a/b'" in bad.stderr


def test_the_config_file_gives_the_defaults_and_options_win(doc, built, tmp_path):
    assert invoke("config", "set", "model", "mock:7").exit_code == 0
    assert invoke("config", "set", "window", "1024").exit_code == 0
    data = json.loads(invoke("ask", doc, QUESTION, "--json").stdout)
    assert built == ["mock:7"] and data["window"] == 1024
    data = json.loads(invoke("ask", doc, QUESTION, "--json", "--model", "mock:3", "--window", 2048).stdout)
    assert built[-1] == "mock:3" and data["window"] == 2048
    assert invoke("config", "set", "window", "lots").exit_code == 1
    assert invoke("config", "set", "kv", "quant:3").exit_code == 1  # checked like --kv


def test_a_broken_config_file_is_one_line_naming_it(doc, built, tmp_path):
    path = tmp_path / "config" / "config.toml"
    path.parent.mkdir()
    path.write_text("model = \n")
    result = invoke("ask", doc, QUESTION)
    assert result.exit_code == 2 and built == []
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: not valid TOML")
    path.write_text('windw = 4096\n')
    assert "unknown setting 'windw'" in invoke("ask", doc, QUESTION).stderr


# -- the runs log -----------------------------------------------------------------------------------------------------
def test_runs_lists_past_runs_and_shows_one(doc, built, tmp_path):
    assert invoke("runs").stdout.startswith("no runs yet")
    assert invoke("ask", doc, QUESTION, "--window", 1024).exit_code == 0
    out = tmp_path / "out"
    assert invoke("summarize", doc, tmp_path / "missing.txt", "--out", out, "--window", 1024).exit_code == 1

    rows = [json.loads(line) for line in invoke("runs", "--json").stdout.splitlines()]
    assert [r["command"] for r in rows] == ["summarize", "ask"]  # newest first; a path never found is not a run
    ask, summary = rows[1], rows[0]
    assert ask["document"] == str(doc) and ask["question"] == QUESTION and ask["status"] == "done"
    assert ask["strategy"] == "chain:notes=rewrite" and ask["window"] == 1024 and ask["output"] is None
    assert ask["prompt_tokens"] > 0 and ask["completion_tokens"] > 0 and ask["calls"] >= 2
    assert summary["output"] == str(out / "harbour.txt.summary.md")
    table = invoke("runs").stdout  # a table: long cells fold, so look for short pieces
    assert "harbour.txt" in table and "boats" in table

    shown = invoke("runs", "show", ask["id"])
    assert shown.exit_code == 0 and ANSWER in shown.stdout and "citations:" in shown.stdout
    assert json.loads(invoke("runs", "show", ask["id"], "--json").stdout)["result"]["answer"] == ANSWER
    assert invoke("runs", "show", 999).exit_code == 1


def test_a_failed_document_is_logged_as_failed(doc, monkeypatch):
    monkeypatch.setattr(longread.backends, "get_model",
                        lambda *a, **k: MockModel(failure=ModelError, fail_on_calls={2}))
    assert invoke("ask", doc, QUESTION, "--window", 1024).exit_code == 1
    [row] = [json.loads(line) for line in invoke("runs", "--json").stdout.splitlines()]
    assert row["status"] == "failed" and row["error"] == "injected failure at call 2"


# -- stdin and URLs ---------------------------------------------------------------------------------------------------
def test_a_dash_reads_standard_input(built):
    result = invoke("ask", "-", QUESTION, "--window", 1024, "--json", input=long_text(12))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["source"] == "<stdin>" and data["answer"] == ANSWER and data["segments"] >= 2
    empty = invoke("ask", "-", QUESTION, input="")
    assert empty.exit_code == 1 and empty.stderr.splitlines() == ["error: <stdin>: empty input (nothing was piped in)"]


@pytest.fixture
def web(tmp_path):
    """A local web server over tmp_path/site (the tests never leave 127.0.0.1)."""
    site = tmp_path / "site"
    site.mkdir()
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # the server's request log would land in the CLI's stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_url_is_fetched_and_named_after_its_path(web, built, tmp_path):
    site, base = web
    (site / "harbour.html").write_text("<html><head><title>The Harbour</title></head><body>"
                                       + "".join(f"<p>{p}</p>" for p in long_text(6).split("\n\n")) + "</body></html>")
    out = tmp_path / "out"
    result = invoke("summarize", f"{base}/harbour.html", "--out", out, "--window", 1024)
    assert result.exit_code == 0, result.output
    [written] = out.rglob("*.summary.json")
    data = json.loads(written.read_text())
    assert written.relative_to(out).as_posix() == "127.0.0.1/harbour.html.summary.json"
    assert data["source"] == f"{base}/harbour.html" and data["title"] == "The Harbour"

    missing = invoke("ask", f"{base}/nothing.txt", QUESTION)
    assert missing.exit_code == 1
    assert missing.stderr.splitlines() == [f"error: {base}/nothing.txt: cannot fetch: HTTP 404 File not found"]


def test_an_unreachable_url_is_one_clear_line(built):
    result = invoke("ask", "http://127.0.0.1:9/book.txt", QUESTION)  # port 9: nothing listens
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: http://127.0.0.1:9/book.txt: cannot fetch: ")


# -- fail fast ----------------------------------------------------------------------------------------------------------
def summarize_four_without_a_key(tmp_path, monkeypatch) -> tuple:
    """`summarize` over a folder of four documents with an API model whose key is not set: (the result, its calls)."""
    import litellm

    calls: list = []
    monkeypatch.setattr(litellm, "completion", lambda **kw: calls.append(kw))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        (folder / f"doc{i}.txt").write_text(long_text(4))
    return invoke("summarize", folder, "--model", "openai/gpt-4o-mini"), calls


def test_a_missing_key_fails_before_any_call_naming_the_variable(doc, tmp_path, monkeypatch):
    result, calls = summarize_four_without_a_key(tmp_path, monkeypatch)
    assert result.exit_code == 1 and calls == [] and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "set OPENAI_API_KEY" in line and line.startswith("error: --model openai/gpt-4o-mini")
    # A dry run calls nothing, so it needs no key.
    assert invoke("ask", doc, QUESTION, "--model", "openai/gpt-4o-mini", "--dry-run").exit_code == 0


@pytest.mark.integration  # real time: the run is over before a person would wonder
def test_a_missing_key_fails_within_two_seconds(tmp_path, monkeypatch):
    started = time.monotonic()
    result, calls = summarize_four_without_a_key(tmp_path, monkeypatch)
    assert time.monotonic() - started < 2 and result.exit_code == 1 and calls == []


@pytest.mark.parametrize("model, reason", [
    ("foo/bar", "'foo' is not a provider litellm knows"),
    ("bar", "no provider; write PROVIDER/MODEL"),
    ("hf:/nowhere/at/all", "is not a folder"),
    ("mock:zero", "positive number"),
])
def test_a_model_string_that_cannot_run_fails_even_in_a_dry_run(doc, model, reason):
    result = invoke("ask", doc, QUESTION, "--model", model, "--dry-run")
    assert result.exit_code == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --model {model}") and reason in line


def test_an_authentication_error_stops_the_whole_run(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):
        (folder / f"doc{i}.txt").write_text(long_text(4))

    def rejected(*args, **kwargs):
        error = ModelError("openai/gpt-4o-mini: AuthenticationError (not retried, after 1 attempt): bad key")
        error.error_type = "AuthenticationError"
        raise error

    model = MockModel(responder=rejected)
    monkeypatch.setattr(longread.backends, "get_model", lambda *a, **k: model)
    result = invoke("summarize", folder, "--window", 1024, "--json")
    assert result.exit_code == 1
    assert model.call_count == 1  # the other documents made no call
    [line] = result.stdout.splitlines()
    assert json.loads(line)["error_type"] == "AuthenticationError"
    assert "the run stops" in result.stderr


# -- truthful outputs -----------------------------------------------------------------------------------------------------
def test_a_rerun_with_other_settings_redoes_the_document_and_says_why(doc, tmp_path, monkeypatch):
    model = MockModel(completion_tokens=20)
    monkeypatch.setattr(longread.backends, "get_model", lambda *a, **k: model)
    out = tmp_path / "out"
    assert invoke("summarize", doc, "--out", out, "--window", 1024).exit_code == 0
    stored = json.loads((out / "harbour.txt.summary.json").read_text())["settings"]
    assert stored["window"] == 1024 and stored["model"] == "local" and stored["strategy"] == "chain:notes=rewrite"
    first = model.call_count

    same = invoke("summarize", doc, "--out", out, "--window", 1024)
    assert model.call_count == first and "skipped" in same.stderr
    other = invoke("summarize", doc, "--out", out, "--window", 2048)
    assert model.call_count > first
    assert "redoing" in other.stderr and "window 1024 -> 2048" in other.stderr
    assert json.loads((out / "harbour.txt.summary.json").read_text())["settings"]["window"] == 2048


def test_an_answer_cut_by_its_cap_is_marked(doc, monkeypatch):
    # Every call writes more than any cap: the manager's answer is cut at its max_new_tokens.
    monkeypatch.setattr(longread.backends, "get_model", lambda *a, **k: MockModel(completion_tokens=10_000))
    result = invoke("ask", doc, QUESTION, "--window", 1024)
    assert result.exit_code == 0
    assert re.search(r"^\[cut: the text reached its cap of \d+ tokens\]$", result.stdout, re.M)
    data = json.loads(invoke("ask", doc, QUESTION, "--window", 1024, "--json").stdout)
    assert data["finish_reason"] == "length"
    monkeypatch.setattr(longread.backends, "get_model", lambda *a, **k: answering_mock())
    assert "[cut:" not in invoke("ask", doc, QUESTION, "--window", 1024, "--force").stdout


def test_a_local_dry_run_estimates_time_from_a_measured_calibration(doc, monkeypatch):
    local = MockModel(completion_tokens=16)
    local.is_local = True  # a model on this machine: priced in seconds, not dollars
    monkeypatch.setattr(longread.backends, "get_model", lambda *a, **k: local)
    plain = invoke("ask", doc, QUESTION, "--window", 1024, "--dry-run")
    data = json.loads(invoke("ask", doc, QUESTION, "--window", 1024, "--dry-run", "--json").stdout)
    assert plain.exit_code == 0
    assert len(local.calls) == 4  # per run: a warm-up and one calibration call, nothing else
    assert "estimated time with mock on this machine: at most" in plain.stdout and "no price" not in plain.stdout
    estimate = data["estimate"]
    speed = estimate["speed"]
    assert speed["prefill_tokens_per_second"] > 0 and speed["decode_tokens_per_second"] > 0
    expected = (estimate["prompt_tokens"] / speed["prefill_tokens_per_second"]
                + estimate["completion_tokens_max"] / speed["decode_tokens_per_second"])
    assert estimate["estimated_seconds_max"] == pytest.approx(expected, rel=0.05, abs=0.1)


# -- models -----------------------------------------------------------------------------------------------------------
def test_models_json_comes_from_the_registry_with_litellm_prices():
    from longread.backends.litellm.model import LiteLLMModel

    rows = [json.loads(line) for line in invoke("models", "--json").stdout.splitlines()]
    by_model = {r["model"]: r for r in rows}
    assert by_model["local"]["backend"] == "local" and by_model["local"]["window"] == 4096
    assert by_model["openai/MODEL"]["backend"] == "litellm"
    openai = {json.loads(line)["model"]: json.loads(line) for line in invoke("models", "openai", "--json").stdout.splitlines()}
    price_in, price_out = LiteLLMModel("openai/gpt-4o-mini").price_per_token()
    row = openai["openai/gpt-4o-mini"]
    assert row["input_cost_per_million"] == pytest.approx(price_in * 1e6)
    assert row["output_cost_per_million"] == pytest.approx(price_out * 1e6)
    assert invoke("models", "nosuchprovider").exit_code == 1


# -- streaming --------------------------------------------------------------------------------------------------------
class Streaming(MockModel):
    """Streams its replies in pieces and records which calls were asked to stream."""

    streams = True

    def __post_init__(self):
        super().__post_init__()
        self.streamed: list[str | None] = []

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None, on_text=None):
        completion = super()._complete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)
        if on_text is not None:
            self.streamed.append(tag.agent if tag else None)
            for i in range(0, len(completion.text), 5):
                on_text(completion.text[i : i + 5])
        return completion


def test_the_final_answer_streams_once_and_no_stream_turns_it_off(doc, monkeypatch):
    model = Streaming(replies={"manager": ANSWER})
    monkeypatch.setattr(longread.backends, "get_model", lambda *a, **k: model)
    streamed = invoke("ask", doc, QUESTION, "--window", 1024)
    assert streamed.exit_code == 0
    assert model.streamed == ["manager"]  # only the final call streams
    assert streamed.stdout.count(ANSWER) == 1 and streamed.stdout.startswith(ANSWER + "\n\ncitations:")
    model.streamed.clear()
    whole = invoke("ask", doc, QUESTION, "--window", 1024, "--no-stream", "--force")
    assert model.streamed == [] and whole.stdout == streamed.stdout
    model.streamed.clear()
    assert invoke("ask", doc, QUESTION, "--window", 1024, "--json", "--force").exit_code == 0
    assert model.streamed == []  # JSON is written whole
